"""A run killed mid-way keeps every batch it committed; the next run does only what is missing.

The run under test is a real `execute_in_process` in a child process, killed with SIGKILL as
soon as the catalog shows its first committed batch (no cleanup code gets to run), then
re-run to the end in this process. The work is made slow enough (or, for `clips`, made to
hang on its last video) that the kill always lands mid-run.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

import synth
from svd_dag.catalog import Catalog
from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings

CHILD = textwrap.dedent("""
    import json, sys
    import dagster as dg
    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings
    env, assets, config = json.loads(sys.argv[1])
    job = build_defs(load_settings(env)).resolve_implicit_global_asset_job_def()
    job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=[dg.AssetKey(a) for a in assets],
                           run_config={"ops": config})
""")


@pytest.fixture()
def corpus(tmp_path, bikes_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(bikes_path, raw / "bikes.mp4")
    for i in range(3):
        synth.moving_video(str(raw / f"pan{i}.mp4"), seconds=3.0 + i, speed=1.0 + i)
    env = {"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_RAW_URI": str(raw),
           "SVD_DAG_MODELS_URI": str(tmp_path / "models"), "SVD_DAG_MAX_WORKERS": "1"}
    return env


def _kill_after_first_commit(env: dict, assets: list[str], config: dict, table: str) -> int:
    """Start the run in a child, SIGKILL it once `table` has rows, return the rows it left."""
    import json

    cat = Catalog.from_settings(load_settings(env))
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps([env, assets, config])],
                             env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        polls = 0
        while time.monotonic() < start + 240 and child.poll() is None:
            polls += 1
            if table in cat.tables() and cat.scalar(f'SELECT count(*) FROM "{table}"'):
                break
            time.sleep(0.1)
        assert child.poll() is None, (f"the run finished before it could be killed ({polls} polls in "
                                      f"{time.monotonic() - start:.1f} s): make the work slower")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
    return int(cat.scalar(f'SELECT count(*) FROM "{table}"'))


def _materialize(env: dict, assets: list[str], config: dict) -> dict:
    result = build_defs(load_settings(env)).resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=[dg.AssetKey(a) for a in assets],
        run_config={"ops": config})
    assert result.success
    return {ev.event_specific_data.materialization.asset_key.to_user_string():
            {k: getattr(v, "value", v) for k, v in ev.event_specific_data.materialization.metadata.items()}
            for ev in result.get_asset_materialization_events()}


def test_a_killed_annotator_keeps_its_batches_and_the_rerun_scores_only_the_rest(corpus):
    _materialize(corpus, ["raw_videos", "clips"], {})
    cat = Catalog.from_settings(load_settings(corpus))
    total = int(cat.scalar("SELECT count(*) FROM clips"))
    # One clip per batch, flow at 1024 px: seconds per clip, so the kill lands mid-run.
    slow = {"motion_scores": {"config": {"batch_clips": 1, "flow_width": 1024, "workers": 1}}}
    kept = _kill_after_first_commit(corpus, ["motion_scores"], slow, "motion_scores")
    assert 1 <= kept < total
    rerun = _materialize(corpus, ["motion_scores"], slow)["motion_scores"]
    assert rerun["scored_this_run"] == total - kept
    assert rerun["dagster/row_count"] == total
    assert cat.scalar("SELECT count(*) FROM motion_scores") == cat.scalar(
        "SELECT count(DISTINCT (clip_id, model_version)) FROM motion_scores") == total
    assert _materialize(corpus, ["motion_scores"], slow)["motion_scores"]["scored_this_run"] == 0


def test_a_killed_inventory_keeps_what_it_hashed_and_the_rerun_reads_only_the_rest(tmp_path, bikes_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    total = 150
    for i in range(total):
        shutil.copy(bikes_path, raw / f"v{i:03d}.mp4")
    env = {"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_RAW_URI": str(raw),
           "SVD_DAG_MODELS_URI": str(tmp_path / "models")}
    one_at_a_time = {"raw_videos": {"config": {"batch_files": 1, "threads": 1}}}  # a commit per file
    kept = _kill_after_first_commit(env, ["raw_videos"], one_at_a_time, "raw_video_probes")
    assert 1 <= kept < total
    cat = Catalog.from_settings(load_settings(env))
    assert "raw_videos" not in cat.tables()  # the killed run never finished its inventory

    rerun = _materialize(env, ["raw_videos"], one_at_a_time)["raw_videos"]
    assert (rerun["hashed_this_run"], rerun["dagster/row_count"], rerun["videos_ok"]) == (total - kept, total, total)
    assert cat.scalar("SELECT count(*) FROM raw_video_probes") == 0  # folded into raw_videos
    assert cat.scalar("SELECT count(DISTINCT uri) FROM raw_videos WHERE sha256 IS NOT NULL") == total
    (raw / "v000.mp4").write_bytes(b"not a video any more")
    again = _materialize(env, ["raw_videos"], {})["raw_videos"]
    assert (again["hashed_this_run"], again["quarantined"]) == (1, 1)
