"""The code location: loads fast, names the public assets, schedules and sensors off by default."""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

import synth
from svd_dag.definitions import build_defs
from svd_dag.jobs.curation import new_raw_video_sensor
from svd_dag.resources import StorageResource
from svd_dag.settings import load_settings

CURATION_ASSETS = {"raw_videos", "clips", "motion_scores", "ocr_scores", "clip_embeddings", "aesthetic_scores",
                   "captions", "caption_similarity", "annotations", "lvd_f", "clip_shards"}


def test_loading_definitions_imports_no_heavy_library():
    code = ("import sys, json; import svd_dag.definitions as d; d.defs(); "
            "print(json.dumps([m for m in ('torch', 'open_clip', 'easyocr', 'diffusers', 'transformers', 'ray') if m in sys.modules]))")
    env = {**os.environ, "SVD_DAG_EXECUTOR": "ray"}  # the Ray backend too: ray is imported when a step runs
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


SHARED_WIRING = {"common", "lineage_checks", "checkpoint_runs"}  # assets/ modules that are not a group's


def test_group_modules_refer_to_each_other_by_asset_key_only():
    """An assets/ group module imports only the shared wiring modules, never another group's
    module (its assets are named by key in `deps`)."""
    import ast
    import pathlib

    import svd_dag.assets

    folder = pathlib.Path(svd_dag.assets.__file__).parent
    groups = {p.stem for p in folder.glob("*.py")} - SHARED_WIRING - {"__init__"}
    assert {"curation", "training", "finetunes"} <= groups
    crossing = []
    for name in sorted(groups):
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("svd_dag.assets."):
                if node.module.removeprefix("svd_dag.assets.") not in SHARED_WIRING:
                    crossing.append(f"{name} imports {node.module}")
    assert crossing == []


def test_the_executor_backend_is_chosen_by_configuration_alone(tmp_path):
    from dagster_ray import LocalRay

    from svd_dag.resources.executor import RayClusterAddress

    def executor(**env):
        return build_defs(load_settings({"SVD_DAG_HOME": str(tmp_path), **env})).resources["video_executor"]

    assert executor().backend == "local" and executor().ray_cluster is None
    on_laptop = executor(SVD_DAG_EXECUTOR="ray")
    assert isinstance(on_laptop.ray_cluster, LocalRay)  # dagster-ray starts a Ray on this machine per step
    on_cluster = executor(SVD_DAG_EXECUTOR="ray", RAY_ADDRESS="ray://head.ray.svc:10001", SVD_DAG_RAY_RETRIES="5",
                          SVD_DAG_RAY_ITEM_TIMEOUT_S="900", SVD_DAG_RAY_SHARED_FILESYSTEM="true")
    assert isinstance(on_cluster.ray_cluster, RayClusterAddress)
    assert on_cluster.ray_cluster.ray_address == "ray://head.ray.svc:10001"
    assert (on_cluster.ray_retries, on_cluster.ray_item_timeout_s, on_cluster.ray_shared_filesystem) == (5, 900.0, True)
    with pytest.raises(ValueError, match="SVD_DAG_EXECUTOR='dask'"):
        executor(SVD_DAG_EXECUTOR="dask")


def test_a_ray_address_nobody_answers_at_fails_at_once():
    import socket
    import time

    from svd_dag.curation.ray_executor import RayExecutor, RayOptions

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        RayExecutor(RayOptions(f"127.0.0.1:{port}")).map(str, ["item"])
    assert time.monotonic() - start < 30


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


@pytest.mark.parametrize("asset, field, bad", [("stage1_image_checkpoint", "profile", "huge"),
                                               ("stage1_image_checkpoint", "data_source", "s3"),
                                               ("lvd_f", "eval_split_by", "frame")])
def test_a_config_choice_outside_its_values_is_refused_before_any_step_runs(tmp_path, asset, field, bad):
    from svd_dag.settings import load_settings

    defs = build_defs(load_settings({"SVD_DAG_HOME": str(tmp_path / "home")}))
    job = defs.resolve_job_def("training" if asset.startswith("stage") else "recuration")
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"{field}.*not in enum type"):
        job.execute_in_process(run_config={"ops": {asset: {"config": {field: bad}}}},
                               asset_selection=[dg.AssetKey(asset)] + ([dg.AssetKey("lvd_f_eval")] if asset == "lvd_f"
                                                                       else []))
    assert not os.path.exists(tmp_path / "home" / "data")  # nothing ran, nothing was written
