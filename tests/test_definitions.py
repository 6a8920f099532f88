"""The code location: loads fast, names the public assets, schedules and sensors off by default."""

import json
import os
import subprocess
import sys

import dagster as dg

import synth
from svd_dag.definitions import build_defs
from svd_dag.jobs.curation import new_raw_video_sensor
from svd_dag.resources import StorageResource
from svd_dag.settings import load_settings

CURATION_ASSETS = {"raw_videos", "clips", "motion_scores", "ocr_scores", "clip_embeddings", "aesthetic_scores",
                   "captions", "caption_similarity", "annotations", "lvd_f", "clip_shards"}


def test_loading_definitions_imports_no_heavy_library():
    code = ("import sys, json; import svd_dag.definitions as d; d.defs(); "
            "print(json.dumps([m for m in ('torch', 'open_clip', 'easyocr', 'diffusers', 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_asset_graph_uses_the_public_names(tmp_path):
    defs = build_defs(load_settings({"SVD_DAG_HOME": str(tmp_path)}))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert CURATION_ASSETS <= keys
    for key in CURATION_ASSETS:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "curation" and node.code_version
        assert (node.description or "").strip(), key
    assert dg.AssetKey("clips") in graph.get(dg.AssetKey("motion_scores")).parent_keys


def test_schedule_and_sensor_start_switched_off(tmp_path):
    defs = build_defs(load_settings({"SVD_DAG_HOME": str(tmp_path)}))
    assert defs.resolve_schedule_def("weekly_recuration").default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_sensor_def("new_raw_video_sensor").default_status == dg.DefaultSensorStatus.STOPPED


def test_sensor_requests_a_run_only_when_raw_files_change(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    synth.static_video(str(raw / "a.mp4"))
    resources = {"raw_storage": StorageResource(uri=str(raw))}
    first = new_raw_video_sensor(dg.build_sensor_context(resources=resources))
    assert isinstance(first, dg.RunRequest)
    cursor = first.run_key
    unchanged = new_raw_video_sensor(dg.build_sensor_context(cursor=cursor, resources=resources))
    assert isinstance(unchanged, dg.SkipReason)
    synth.moving_video(str(raw / "b.mp4"))
    changed = new_raw_video_sensor(dg.build_sensor_context(cursor=cursor, resources=resources))
    assert isinstance(changed, dg.RunRequest) and changed.run_key != cursor


def test_workspace_loads_with_the_dagster_cli(tmp_path):
    env = {**os.environ, "SVD_DAG_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate",
                          "-w", "workspace.yaml"], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "All code locations passed validation" in out.stderr + out.stdout
