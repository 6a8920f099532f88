"""The whole curation group materialized through Dagster into a temporary SVD_DAG_HOME."""

import os
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

import synth
from svd_dag.catalog import Catalog
from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings

ANNOTATION_TABLES = ["motion_scores", "ocr_scores", "clip_embeddings", "aesthetic_scores", "captions", "caption_similarity"]


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, bikes_path):
    root = tmp_path_factory.mktemp("pipeline")
    raw = root / "raw"
    raw.mkdir()
    shutil.copy(bikes_path, raw / "bikes.mp4")
    synth.crossfade_video(str(raw / "fade.mp4"))
    synth.static_video(str(raw / "static.mp4"))
    synth.zero_byte_file(str(raw / "zero.mp4"))
    synth.text_file_named_mp4(str(raw / "readme.mp4"))
    synth.bad_metadata_video(str(raw / "badmeta.mp4"))
    synth.one_frame_video(str(raw / "oneframe.mp4"))
    settings = load_settings({"SVD_DAG_HOME": str(root / "home"), "SVD_DAG_RAW_URI": str(raw),
                              "SVD_DAG_MODELS_URI": str(root / "models")})
    defs = build_defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("recuration")
    first = job.execute_in_process(instance=instance)
    second = job.execute_in_process(instance=instance)
    third = job.execute_in_process(
        instance=instance, run_config={"ops": {"motion_scores": {"config": {"flow_width": 192}}}}
    )
    return {"settings": settings, "cat": Catalog.from_settings(settings), "runs": [first, second, third],
            "meta": [_metadata(r) for r in (first, second, third)]}


def test_every_run_succeeds_and_materializes_the_whole_group(world):
    for run in world["runs"]:
        assert run.success
    assert set(world["meta"][0]) == {"raw_videos", "clips", *ANNOTATION_TABLES, "annotations", "lvd_f", "lvd_f_eval",
                                     "clip_shards"}


def test_catalog_has_one_table_per_asset_plus_quarantine(world):
    assert {"raw_videos", "clips", *ANNOTATION_TABLES, "annotations", "lvd_f", "quarantine"} <= world["cat"].tables()


def test_bad_inputs_are_quarantined_with_reasons_and_counted(world):
    q = {(os.path.basename(r["uri"]), r["stage"]): r["reason"] for r in world["cat"].quarantined()}
    assert "empty (0 bytes)" in q[("zero.mp4", "raw_videos")]
    assert "not a readable video container" in q[("readme.mp4", "raw_videos")]
    assert "header says" in q[("badmeta.mp4", "clips")]
    assert "no clip of at least" in q[("oneframe.mp4", "clips")]
    meta = world["meta"][0]
    assert meta["raw_videos"]["quarantined"] == 2
    assert meta["clips"]["quarantined"] == 2


def test_clips_come_from_the_cascade(world):
    cat = world["cat"]
    by_video = {os.path.basename(r["video_uri"]): r["n"] for r in
                cat.rows("SELECT video_uri, count(*) AS n FROM clips GROUP BY video_uri")}
    assert by_video == {"bikes.mp4": 5, "fade.mp4": 2, "static.mp4": 1}
    fade_second = cat.rows("SELECT boundary_passes FROM clips WHERE video_uri LIKE '%fade.mp4' AND start_frame > 0")
    assert "native" not in fade_second[0]["boundary_passes"]


def test_every_clip_is_annotated_and_random_weights_are_labelled(world):
    cat = world["cat"]
    n = cat.rows("SELECT count(*) AS n FROM clips")[0]["n"]
    for table in ANNOTATION_TABLES:
        assert cat.rows(f"SELECT count(DISTINCT clip_id) AS n FROM {table}")[0]["n"] == n, table
    for table in ("clip_embeddings", "aesthetic_scores", "caption_similarity", "captions"):
        assert {r["weights"] for r in cat.rows(f"SELECT DISTINCT weights FROM {table}")} == {"random"}, table
    assert world["meta"][0]["lvd_f"]["weights"].startswith("random")
    assert "weights=random" in world["meta"][0]["annotations"]["weights"]


def test_lvd_f_writes_a_versioned_manifest_with_its_thresholds(world):
    meta = world["meta"][0]["lvd_f"]
    manifest = pq.read_table(meta["manifest_uri"])
    assert manifest.num_rows == meta["kept"] > 0
    assert set(manifest.column("dataset_version").to_pylist()) == {meta["dataset_version"]}
    assert b"svd_dag.filter_report" in manifest.schema.metadata
    assert meta["thresholds"]["remove_fractions"] == {"motion": 0.25, "aesthetics": 0.25, "caption_similarity": 0.5, "text": 0.25}
    decisions = world["cat"].rows("SELECT count(*) AS n FROM filter_decisions WHERE dataset_version = ?", [meta["dataset_version"]])
    assert decisions[0]["n"] == 4 * meta["clips_in"]


def test_rerun_is_incremental_and_never_duplicates(world):
    second = world["meta"][1]
    assert second["clips"]["videos_decoded_this_run"] == 0
    assert second["clips"]["videos_reused"] == 3
    for table in ANNOTATION_TABLES:
        assert second[table]["scored_this_run"] == 0, table
    cat = world["cat"]
    assert cat.rows("SELECT count(*) AS n FROM clips")[0]["n"] == 8
    assert len(cat.quarantined()) == 4
    assert second["lvd_f"]["dataset_version"] == world["meta"][0]["lvd_f"]["dataset_version"]


def test_changing_one_annotator_recomputes_that_annotation_only(world):
    third = world["meta"][2]
    assert third["motion_scores"]["scored_this_run"] == 8
    assert "192px" in third["motion_scores"]["model_version"]
    for table in ("ocr_scores", "clip_embeddings", "aesthetic_scores", "captions", "caption_similarity"):
        assert third[table]["scored_this_run"] == 0, table
    assert third["clips"]["videos_decoded_this_run"] == 0


def test_eval_split_by_video_holds_out_whole_videos(world):
    """eval_split_by=video: every clip of a held-out video is in lvd_f_eval, none in training."""
    defs = build_defs(world["settings"])
    keep_all = {"motion_remove": 0.0, "aesthetics_remove": 0.0, "caption_similarity_remove": 0.0, "text_remove": 0.0}
    result = defs.resolve_job_def("recuration").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=[dg.AssetKey("lvd_f"), dg.AssetKey("lvd_f_eval")],
        run_config={"ops": {"lvd_f": {"config": {**keep_all, "eval_fraction": 0.5, "eval_split_by": "video"}}}})
    assert result.success
    cat = world["cat"]
    train = {r["video_sha256"] for r in cat.rows("SELECT video_sha256 FROM lvd_f")}
    held = {r["video_sha256"] for r in cat.rows("SELECT video_sha256 FROM lvd_f_eval")}
    assert train and held and not train & held
    assert len(cat.rows("SELECT * FROM lvd_f")) + len(cat.rows("SELECT * FROM lvd_f_eval")) == len(cat.rows("SELECT * FROM clips"))


def test_blocking_check_fails_lvd_f_when_nothing_is_kept(world):
    """Runs after the tests that read the world's state: it leaves an empty lvd_f behind."""
    defs = build_defs(world["settings"])
    result = defs.resolve_job_def("recuration").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey("lvd_f"), dg.AssetKey("lvd_f_eval")],
        run_config={"ops": {"lvd_f": {"config": {"text_max_area": -1.0}}}},
        raise_on_error=False,
    )
    assert not result.success
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.check_name == "keeps_clips" and not evaluation.passed


def test_new_sample_settings_rescore_frames_but_a_cascade_change_alone_does_not(world):
    """Scores follow the frames they were computed on: new sample settings recompute them;
    a cascade change that moves no clip boundary rescans but reuses every score. Runs after
    the tests that read the world's state (it leaves clips at other settings)."""
    job = build_defs(world["settings"]).resolve_job_def("recuration")
    instance = dg.DagsterInstance.ephemeral()
    selection = [dg.AssetKey("clips"), dg.AssetKey("motion_scores")]
    same_flow = {"motion_scores": {"config": {"flow_width": 192}}}  # the model of the world's last run

    narrower = _metadata(job.execute_in_process(instance=instance, asset_selection=selection, run_config={
        "ops": {"clips": {"config": {"sample_width": 448}}, **same_flow}}))
    assert narrower["clips"]["videos_decoded_this_run"] == 3
    assert narrower["clips"]["samples"] == "2fps-448w-q95"
    assert narrower["motion_scores"]["scored_this_run"] == 8
    assert narrower["motion_scores"]["model_version"].endswith("@samples=2fps-448w-q95")
    assert world["meta"][2]["motion_scores"]["model_version"].endswith("@samples=2fps-512w-q95")

    stricter = _metadata(job.execute_in_process(instance=instance, asset_selection=selection, run_config={
        "ops": {"clips": {"config": {"sample_width": 448, "confirm_hist_distance": 0.31}}, **same_flow}}))
    assert stricter["clips"]["videos_decoded_this_run"] == 3
    assert stricter["clips"]["scan_key"] != narrower["clips"]["scan_key"]
    assert stricter["clips"]["dagster/row_count"] == 8
    assert stricter["motion_scores"]["scored_this_run"] == 0


KEEP_ALL = {"motion_remove": 0.0, "aesthetics_remove": 0.0, "caption_similarity_remove": 0.0, "text_remove": 0.0}


def test_new_scores_for_the_same_clips_make_a_new_dataset_version_and_stale_training(world):
    """Re-annotating motion at another flow width keeps the same clips with other scores: a new
    dataset version appears, the old version's files keep their bytes, and the training
    assets downstream are stale in Dagster. Runs last: it leaves motion at another width."""
    import hashlib

    from dagster._utils.test.data_versions import get_stale_status_resolver

    defs = build_defs(world["settings"])
    job, instance, cat = defs.resolve_implicit_global_asset_job_def(), dg.DagsterInstance.ephemeral(), world["cat"]

    def run(selection, **config):
        selection += ["lvd_f_eval"] if "lvd_f" in selection else []  # one multi-asset: both or neither
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(a) for a in selection],
                                        run_config={"ops": {k: {"config": v} for k, v in config.items()}})
        assert result.success
        return _metadata(result)

    def stale(asset):
        return get_stale_status_resolver(instance, defs.assets).get_status(dg.AssetKey(asset)).value

    before = run(["motion_scores", "annotations", "lvd_f", "hq_finetune_set"], motion_scores={"flow_width": 224},
                 lvd_f=KEEP_ALL, hq_finetune_set=KEEP_ALL)
    old_files = {u: hashlib.sha256(open(u, "rb").read()).hexdigest()
                 for u in (before["lvd_f"]["manifest_uri"], before["lvd_f_eval"]["manifest_uri"])}
    old_ids = [r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f ORDER BY 1")]
    assert stale("hq_finetune_set") == "FRESH"

    again = run(["lvd_f"], lvd_f=KEEP_ALL)  # same inputs: the same version, nothing rewritten
    assert again["lvd_f"]["dataset_version"] == before["lvd_f"]["dataset_version"]
    assert again["lvd_f"]["reused_existing_version"] is True

    after = run(["motion_scores", "annotations", "lvd_f"], motion_scores={"flow_width": 160}, lvd_f=KEEP_ALL)
    assert after["motion_scores"]["scored_this_run"] == 8
    assert [r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f ORDER BY 1")] == old_ids  # same clips ...
    assert after["lvd_f"]["dataset_version"] != before["lvd_f"]["dataset_version"]  # ... another version
    assert after["lvd_f"]["manifest_uri"] != before["lvd_f"]["manifest_uri"]
    assert {u: hashlib.sha256(open(u, "rb").read()).hexdigest() for u in old_files} == old_files
    assert stale("hq_finetune_set") == "STALE"
    assert stale("stage1_image_checkpoint") == "MISSING"  # never trained here; stale once it has been
    versions = {r["dataset_version"] for r in cat.rows("SELECT dataset_version FROM dataset_versions WHERE asset = 'lvd_f'")}
    assert {before["lvd_f"]["dataset_version"], after["lvd_f"]["dataset_version"]} <= versions
    old = pq.read_table(before["lvd_f"]["manifest_uri"])
    assert pq.read_table(after["lvd_f"]["manifest_uri"]).column("motion_score").to_pylist() != \
        old.column("motion_score").to_pylist()
    # The catalog as it was when the old version was published: its lvd_f table is the old manifest.
    snapshot = before["lvd_f"]["catalog_snapshot"]
    assert cat.rows(f"SELECT clip_id, motion_score FROM lvd_f AT (VERSION => {snapshot}) ORDER BY clip_id") == \
        old.select(["clip_id", "motion_score"]).to_pylist()


def test_a_version_folder_is_never_overwritten(tmp_path):
    from svd_dag.storage import ImmutableArtefactError, Store

    store = Store(str(tmp_path))
    uri = store.write_once("v/manifest.parquet", b"one")
    assert store.write_once("v/manifest.parquet", b"one") == uri  # same bytes: a no-op
    with pytest.raises(ImmutableArtefactError, match="written once"):
        store.write_once("v/manifest.parquet", b"two")
    assert open(uri, "rb").read() == b"one"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "w.bin").write_bytes(b"w")
    store.put_dir(str(tmp_path / "ckpt"), "checkpoints/a/key")
    with pytest.raises(ImmutableArtefactError, match="written once"):
        store.put_dir(str(tmp_path / "ckpt"), "checkpoints/a/key")
