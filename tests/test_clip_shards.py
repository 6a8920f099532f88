"""clip_shards: kept clips transcoded once into tar shards, read back by ranged reads, used by training."""

import hashlib
import io
import os
import shutil
import tarfile

import av
import cv2
import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

import synth
from svd_dag.assets.checkpoint_runs import with_data_source
from svd_dag.catalog import Catalog
from svd_dag.curation.datasets import MANIFEST_COLUMNS, DatasetPart, publish_dataset
from svd_dag.curation.executor import LocalProcessExecutor
from svd_dag.curation.media import read_frames
from svd_dag.curation.shards import EncodeSettings, output_size, read_clip_frames, read_member, shard_clips
from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings
from svd_dag.storage import Store
from svd_dag.training.data import ClipDataset

SMALL = {"max_height": 96, "crf": 26, "preset": "ultrafast", "max_clips_per_shard": 2}


def _meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
             if e.event_specific_data.materialization.asset_key.to_user_string() == asset]
    return {"data_version": mat.tags.get("dagster/data_version"),
            **{k: getattr(v, "value", v) for k, v in mat.metadata.items()}}


def _publish_lvd_f(cat: Catalog, store: Store) -> str:
    """An lvd_f version keeping every clip (the annotators are not what is under test here)."""
    scores = {"motion_score", "text_area", "aesthetic_score", "caption_similarity"}
    columns = ", ".join(f"NULL::DOUBLE AS {c}" if c in scores else "'a test caption' AS caption" if c == "caption" else c
                        for c in MANIFEST_COLUMNS.replace(" ", "").split(","))
    return cat.write(lambda con: publish_dataset(
        con, store, [DatasetPart("lvd_f", f"SELECT {columns} FROM clips ORDER BY clip_id")],
        version_inputs={"test": "every clip kept"}, report={}, folder="lvd_f", total=0)).version


def _shard_files(store: Store) -> dict[str, str]:
    found = store.fs.glob(store.uri("clip_shards/*/shard-*.tar"))
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in found}


@pytest.fixture(scope="module")
def world(tmp_path_factory, bikes_path):
    root = tmp_path_factory.mktemp("shards")
    raw = root / "raw"
    raw.mkdir()
    shutil.copy(bikes_path, raw / "bikes.mp4")
    synth.moving_video(str(raw / "pan.mp4"), seconds=2.0)
    synth.static_video(str(raw / "doomed.mp4"), seconds=2.0)
    settings = load_settings({"SVD_DAG_HOME": str(root / "home"), "SVD_DAG_RAW_URI": str(raw),
                              "SVD_DAG_MODELS_URI": str(root / "models")})
    defs, instance = build_defs(settings), dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("recuration")
    cat, store = Catalog.from_settings(settings), Store(settings.storage_uri)

    def shard(config=SMALL):
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("clip_shards")],
                                        run_config={"ops": {"clip_shards": {"config": config}}})
        assert result.success
        return _meta(result, "clip_shards"), _shard_files(store), cat.quarantined("clip_shards")

    assert job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("raw_videos"), dg.AssetKey("clips")]).success
    version = _publish_lvd_f(cat, store)
    doomed = open(raw / "doomed.mp4", "rb").read()
    (raw / "doomed.mp4").write_bytes(doomed[: len(doomed) // 2])  # the video broke after it was curated
    first = shard()
    second = shard()
    (raw / "doomed.mp4").write_bytes(doomed)  # repaired: its clip is sharded next time, in a new shard
    third = shard()
    return {"cat": cat, "store": store, "raw": raw, "runs": [first, second, third], "version": version}


def test_kept_clips_are_sharded_and_a_broken_video_is_quarantined(world):
    cat, (meta, files, quarantined) = world["cat"], world["runs"][0]
    clips = cat.rows("SELECT * FROM lvd_f")
    doomed = [c for c in clips if c["video_uri"].endswith("doomed.mp4")]
    assert len(clips) >= 3 and len(doomed) == 1
    assert meta["quarantined"] == 1 and meta["transcoded_now"] == len(clips) - 1 and meta["reused"] == 0
    assert meta["dagster/row_count"] == len(clips) - 1 and len(files) == len(meta["shard_uris"]) >= 2
    [q] = quarantined
    assert q["uri"] == f"{doomed[0]['video_uri']}#frames={doomed[0]['start_frame']}-{doomed[0]['end_frame']}"
    # It broke after curation: its bytes are no longer those its clip was cut from, and the reason says so.
    assert "doomed.mp4" in q["reason"] and "changed since it was inventoried" in q["reason"]


def test_each_member_holds_the_clips_frames_where_the_catalog_says(world):
    rows = world["cat"].rows("SELECT * FROM clip_shards")
    for r in rows:
        assert r["shard_frames"] == r["end_frame"] - r["start_frame"]
        assert r["shard_height"] <= 96 and r["shard_width"] % 2 == 0 and r["shard_height"] % 2 == 0
        with tarfile.open(r["shard_uri"]) as tar:
            member = tar.getmember(r["shard_member"])
            assert (member.offset_data, member.size) == (r["shard_offset"], r["shard_size"])
            assert f"{r['clip_id']}.json" in tar.getnames()
            data = tar.extractfile(member).read()
        assert hashlib.sha256(data).hexdigest() == r["shard_sha256"]
        with av.open(io.BytesIO(data)) as c:
            stream = c.streams.video[0]
            assert sum(1 for _ in c.decode(stream)) == r["shard_frames"]
            assert abs(float(stream.average_rate) - r["shard_fps"]) < 1e-3


def test_bad_encode_settings_are_refused_before_any_clip_is_cut():
    for bad, why in (({"preset": "warp"}, "preset must be one of"), ({"crf": 60}, "crf must be in"),
                     ({"max_height": 1}, "max_height must be")):
        with pytest.raises(ValueError, match=why):
            EncodeSettings(**bad).validate()


def test_output_size_fits_max_height_and_never_upscales():
    assert output_size(1280, 720, 576) == (1024, 576)
    assert output_size(640, 272, 96) == (226, 96)
    assert output_size(176, 144, 576) == (176, 144)
    assert output_size(175, 143, 576) == (174, 142)


def test_a_member_is_read_by_range_alone(world, tmp_path):
    """Zero every byte of the shard outside one member: that member still reads and decodes."""
    r = world["cat"].rows("SELECT * FROM clip_shards ORDER BY shard_uri, shard_offset DESC LIMIT 1")[0]
    data = open(r["shard_uri"], "rb").read()
    lo, hi = r["shard_offset"], r["shard_offset"] + r["shard_size"]
    (tmp_path / "holey.tar").write_bytes(bytes(lo) + data[lo:hi] + bytes(len(data) - hi))
    store = Store(str(tmp_path))
    assert read_member(store, str(tmp_path / "holey.tar"), lo, r["shard_size"]) == data[lo:hi]
    clip = world["cat"].rows("SELECT fps FROM lvd_f WHERE clip_id = ?", [r["clip_id"]])[0]
    frames = read_clip_frames(store, {**r, "fps": clip["fps"], "shard_uri": str(tmp_path / "holey.tar")},
                              [r["start_frame"], r["end_frame"] - 1])
    assert frames[0].shape == (r["shard_height"], r["shard_width"], 3)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_shard_frames_match_the_frames_read_by_reference(world):
    cat, store = world["cat"], world["store"]
    for row in cat.rows("SELECT l.fps, s.* FROM clip_shards s JOIN lvd_f l USING (clip_id)"):
        idx = [row["start_frame"], (row["start_frame"] + row["end_frame"]) // 2, row["end_frame"] - 6]
        shard = read_clip_frames(store, row, idx)
        reference = read_frames(store, row["video_uri"], idx, row["fps"])
        for s, ref in zip(shard, reference):
            assert _mad(s, ref) < 8, row["video_uri"]
        if row["video_uri"].endswith("pan.mp4"):  # moving content: a neighbour frame is clearly further away
            later = read_frames(store, row["video_uri"], [i + 5 for i in idx], row["fps"])
            assert all(_mad(s, ref) < _mad(s, far) for s, ref, far in zip(shard, reference, later))


def test_second_materialization_transcodes_nothing(world):
    (first, files1, _), (second, files2, quarantined) = world["runs"][:2]
    assert second["transcoded_now"] == 0 and second["reused"] == first["transcoded_now"]
    assert second["shards_written_now"] == [] and second["bytes_written_now"] == 0
    assert files2 == files1  # no shard written or rewritten
    assert second["data_version"] == first["data_version"]
    assert second["quarantined"] == 1 and len(quarantined) == 1  # the broken clip is retried, and still fails


def test_new_clips_go_into_new_shards_and_leave_quarantine(world):
    (second, files2, _), (third, files3, quarantined) = world["runs"][1:]
    assert third["transcoded_now"] == 1 and third["quarantined"] == 0 and third["reused"] == second["reused"]
    [new] = third["shards_written_now"]
    assert new not in files2 and {u: files3[u] for u in files2} == files2  # append-only
    assert quarantined == []
    assert third["data_version"] != second["data_version"]


def test_index_is_the_manifest_with_shard_references(world):
    cat, meta = world["cat"], world["runs"][2][0]
    index = pq.read_table(meta["index_uri"]).to_pylist()
    assert [r["clip_id"] for r in index] == [r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f ORDER BY clip_id")]
    assert all(r["shard_uri"] and r["dataset_version"] == world["version"] and r["encode_key"] == meta["encode_key"] for r in index)
    [recorded] = cat.rows("SELECT * FROM shard_indexes WHERE dataset_version = ?", [world["version"]])
    assert recorded["index_uri"] == meta["index_uri"] and recorded["sharded"] == recorded["clips"] == len(index)


def test_clip_dataset_reads_items_from_shards(world, tmp_path):
    rows = pq.read_table(world["runs"][2][0]["index_uri"]).to_pylist()
    gone = [{**r, "video_uri": str(tmp_path / "moved-away.mp4")} for r in rows]  # only the shards can serve these
    dataset = ClipDataset(gone, num_frames=4, target_fps=8.0, height=32, width=48)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) == len(rows) and all("skip" not in it for it in items)
    assert items[0]["pixels"].shape == (4, 3, 32, 48) and items[0]["caption"] == "a test caption"
    by_reference = ClipDataset([{k: v for k, v in r.items() if not k.startswith("shard_")} for r in rows[:1]],
                               num_frames=4, target_fps=8.0, height=32, width=48)
    assert "pixels" in by_reference[0]


def test_training_reads_shards_when_they_exist(world, tmp_path):
    cat, store = world["cat"], world["store"]
    lvd_f = {**cat.rows("SELECT * FROM dataset_versions WHERE dataset_version = ?", [world["version"]])[0], "asset": "lvd_f"}
    auto = with_data_source(cat, store, lvd_f, "auto")
    assert auto["data_source"] == "shards" and auto["shard_index_uri"] == world["runs"][2][0]["index_uri"]
    assert with_data_source(cat, store, lvd_f, "reference")["data_source"] == "reference"
    # A stricter subset (hq_finetune_set) gets its own index, joined from the same shards.
    subset = pq.read_table(io.BytesIO(store.read_bytes(lvd_f["manifest_uri"]))).slice(0, 2)
    buf = io.BytesIO()
    pq.write_table(subset, buf)
    hq = {"dataset_version": "hq1", "asset": "hq_finetune_set",
          "manifest_uri": store.write_bytes("hq_finetune_set/hq1/manifest.parquet", buf.getvalue())}
    strict = with_data_source(cat, store, hq, "shards")
    index = pq.read_table(strict["shard_index_uri"])
    assert index.column("clip_id").to_pylist() == subset.column("clip_id").to_pylist()
    assert None not in index.column("shard_uri").to_pylist()
    orbits = {"dataset_version": "o1", "asset": "orbit_renders", "manifest_uri": str(tmp_path)}
    with pytest.raises(ValueError, match="data_source=shards but orbit_renders"):
        with_data_source(cat, store, orbits, "shards")


def test_shards_on_s3_are_read_by_range(s3_endpoint, bikes_path, tmp_path):
    store = Store("s3://shards-test/data")
    store.fs.mkdir("shards-test")
    raw = os.path.dirname(bikes_path)
    sha = hashlib.sha256(open(bikes_path, "rb").read()).hexdigest()
    clip = {"clip_id": "bikes-100-130", "video_uri": bikes_path, "video_sha256": sha, "start_frame": 100,
            "end_frame": 130, "fps": 25.0, "caption": "bikes"}
    run = shard_clips(store, [clip], EncodeSettings(max_height=64, preset="ultrafast"), "s3key",
                      LocalProcessExecutor(1).map, raw)
    [row] = run.rows
    assert row["shard_uri"] == "s3://shards-test/data/clip_shards/s3key/shard-000000.tar" and run.failures == []
    frames = read_clip_frames(store, {**row, "fps": 25.0}, [100, 129])
    assert len(frames) == 2 and frames[0].shape[0] == 64
    again = shard_clips(store, [clip], EncodeSettings(max_height=64, preset="ultrafast"), "s3key",
                        LocalProcessExecutor(1).map, raw)
    assert again.rows[0]["shard_uri"].endswith("shard-000001.tar")  # numbered after what is there


def test_a_raw_video_changed_since_its_inventory_is_not_encoded(tmp_path, bikes_path):
    """Shards must hold the frames the lineage names: a video whose bytes no longer match the
    sha256 its clips were cut from fails with a reason naming it; the other video's clip is encoded."""
    from svd_dag.curation.shards import ShardTask, transcode_task

    good, changed = tmp_path / "good.mp4", tmp_path / "changed.mp4"
    shutil.copy(bikes_path, good)
    shutil.copy(bikes_path, changed)
    sha = hashlib.sha256(open(bikes_path, "rb").read()).hexdigest()
    with open(changed, "ab") as f:
        f.write(b"appended after the inventory")
    clip = {"clip_id": "c", "video_sha256": sha, "start_frame": 0, "end_frame": 8, "fps": 25.0, "width": 1280,
            "height": 720}
    settings = EncodeSettings(max_height=64, crf=30, preset="ultrafast").validate()
    [(bad, why)] = transcode_task(ShardTask(str(tmp_path), ({**clip, "video_uri": str(changed)},), settings))
    assert bad is None and "changed since it was inventoried" in why and str(changed) in why
    [(ok, none)] = transcode_task(ShardTask(str(tmp_path), ({**clip, "video_uri": str(good)},), settings))
    assert none is None and ok.frames == 8
