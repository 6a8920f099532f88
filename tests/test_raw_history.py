"""Raw videos keep their history through the `raw_videos` asset: a deleted file gets a tombstone,
one replaced in place keeps its old sha256 beside the new one, and `lineage down` by uri
finds both versions of the bytes."""

import hashlib
import os

import dagster as dg

import synth
from svd_dag.catalog import Catalog
from svd_dag.definitions import build_defs
from svd_dag.lineage.down import lineage_down
from svd_dag.settings import load_settings


def _inventory(defs, instance):
    result = defs.resolve_job_def("recuration").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("raw_videos")])
    assert result.success
    [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return mat.metadata["changes_since_last_inventory"].value


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_deleted_and_replaced_videos_stay_in_the_history(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    keep, gone, changed = raw / "keep.mp4", raw / "gone.mp4", raw / "changed.mp4"
    synth.static_video(str(keep), seconds=1.0)
    synth.moving_video(str(gone), seconds=1.0)
    synth.moving_video(str(changed), seconds=1.0, speed=2.0)
    old = {p.name: _sha(p) for p in (keep, gone, changed)}
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_RAW_URI": str(raw)})
    defs, instance = build_defs(settings), dg.DagsterInstance.ephemeral()
    assert _inventory(defs, instance) == {"new": 3, "replaced": 0, "deleted": 0}
    assert _inventory(defs, instance) == {"new": 0, "replaced": 0, "deleted": 0}  # nothing changed: nothing recorded

    os.remove(gone)
    synth.static_video(str(changed), seconds=1.5)  # same name, other bytes
    assert _inventory(defs, instance) == {"new": 0, "replaced": 1, "deleted": 1}
    cat = Catalog.from_settings(settings)
    history = {(os.path.basename(r["uri"]), r["sha256"]): r for r in cat.rows("SELECT * FROM raw_video_history")}
    assert len(history) == 4
    assert history[("gone.mp4", old["gone.mp4"])]["deleted_at"] is not None
    before = history[("changed.mp4", old["changed.mp4"])]
    assert before["replaced_at"] is not None and before["replaced_by"] == _sha(changed) != old["changed.mp4"]
    now = history[("changed.mp4", _sha(changed))]
    assert now["replaced_at"] is None and now["deleted_at"] is None and now["first_seen"] >= before["replaced_at"]
    assert history[("keep.mp4", old["keep.mp4"])]["deleted_at"] is None
    report = lineage_down(cat, str(changed))
    assert set(report["videos"]) == {old["changed.mp4"], _sha(changed)}  # both versions of the bytes
    gone_report = lineage_down(cat, old["gone.mp4"])
    assert gone_report["videos"][old["gone.mp4"]][0]["deleted_at"] is not None
