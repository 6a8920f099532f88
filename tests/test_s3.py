"""Storage against a real S3 server (moto's, on 127.0.0.1): raw videos in, artefacts out."""

import dataclasses
import hashlib
import json
import shutil

import dagster as dg
import pytest
import pyarrow.parquet as pq

import synth
from kill_training import retries_of, run_killed
from svd_dag.catalog import Catalog
from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings
from svd_dag.storage import Store

from conftest import meta_of


def test_store_round_trip(s3_endpoint):
    store = Store("s3://roundtrip/prefix")
    store.fs.mkdir("roundtrip")
    uri = store.write_bytes("a/b.bin", b"hello")
    assert uri == "s3://roundtrip/prefix/a/b.bin"
    assert store.read_bytes(uri) == b"hello" and store.size(uri) == 5
    assert store.list_files() == [uri]


@pytest.fixture(scope="module")
def s3_world(s3_endpoint, tmp_path_factory, bikes_path):
    """One curation run with raw videos read from s3:// and every artefact written there."""
    tmp = tmp_path_factory.mktemp("s3_world")
    raw = Store("s3://raw-videos/incoming")
    raw.fs.mkdir("raw-videos")
    Store("s3://curated").fs.mkdir("curated")
    raw.write_bytes("bikes.mp4", open(bikes_path, "rb").read())
    synth.truncated_video(str(tmp / "broken.mp4"))
    raw.write_bytes("sub/broken.mp4", open(tmp / "broken.mp4", "rb").read())

    settings = load_settings({"SVD_DAG_HOME": str(tmp / "home"), "SVD_DAG_RAW_URI": "s3://raw-videos/incoming",
                              "SVD_DAG_STORAGE_URI": "s3://curated/svd", "SVD_DAG_MODELS_URI": str(tmp / "models")})
    # Five clips: keep the filters light so that the manifest is not empty by chance.
    light = {"ops": {"lvd_f": {"config": {"caption_similarity_remove": 0.0, "aesthetics_remove": 0.0}}}}
    defs, instance = build_defs(settings), dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("recuration").execute_in_process(instance=instance, run_config=light)
    return {"settings": settings, "defs": defs, "instance": instance, "result": result}


def test_curation_reads_raw_video_from_s3_and_writes_artefacts_there(s3_world):
    settings, result = s3_world["settings"], s3_world["result"]
    assert result.success

    cat = Catalog.from_settings(settings)
    inventory = {r["uri"]: r for r in cat.rows("SELECT uri, status, sha256 FROM raw_videos")}
    assert inventory["s3://raw-videos/incoming/bikes.mp4"]["status"] == "ok"
    assert inventory["s3://raw-videos/incoming/sub/broken.mp4"]["status"] == "quarantined"
    assert [r["uri"] for r in cat.quarantined()] == ["s3://raw-videos/incoming/sub/broken.mp4"]

    clips = cat.rows("SELECT samples_uri, video_uri FROM clips")
    assert len(clips) == 5
    assert all(c["samples_uri"].startswith("s3://curated/svd/samples/") for c in clips)
    out = Store("s3://curated/svd")
    [lvd_f] = [ev.event_specific_data.materialization for ev in result.get_asset_materialization_events()
               if ev.event_specific_data.materialization.asset_key.to_user_string() == "lvd_f"]
    manifest_uri = lvd_f.metadata["manifest_uri"].value
    assert manifest_uri.startswith("s3://curated/svd/lvd_f/")
    with out.open(manifest_uri) as f:
        manifest = pq.read_table(f)
    assert manifest.num_rows == lvd_f.metadata["kept"].value > 0
    assert set(manifest.column("video_uri").to_pylist()) == {"s3://raw-videos/incoming/bikes.mp4"}
    shards = {r["shard_uri"] for r in cat.rows("SELECT shard_uri FROM clip_shards")}
    assert shards and all(u.startswith("s3://curated/svd/clip_shards/") and out.exists(u) for u in shards)


def test_training_writes_checkpoints_to_s3_and_continues_from_an_s3_parent(s3_world):
    """Stage I's weights go to s3:// (trained from the s3 clip shards); stage II downloads them as
    its parent and writes its own there."""
    settings = s3_world["settings"]
    short = {"steps": 2, "checkpoint_every": 2}
    result = s3_world["defs"].resolve_job_def("training").execute_in_process(
        instance=s3_world["instance"],
        asset_selection=[dg.AssetKey("stage1_image_checkpoint"), dg.AssetKey("stage2_video_checkpoint")],
        run_config={"ops": {"stage1_image_checkpoint": {"config": {**short, "vae_fit_steps": 10}},
                            "stage2_video_checkpoint": {"config": short}}})
    assert result.success
    rows = {r["asset"]: r for r in Catalog.from_settings(settings).rows("SELECT * FROM checkpoints")}
    stage1, stage2 = rows["stage1_image_checkpoint"], rows["stage2_video_checkpoint"]
    assert stage1["checkpoint_uri"].startswith("s3://curated/svd/checkpoints/stage1_image_checkpoint/")
    assert stage1["data_source"] == "shards"
    assert stage2["parent_checkpoint_uri"] == stage1["checkpoint_uri"]
    out = Store("s3://curated/svd")
    assert out.exists(f"{stage2['checkpoint_uri']}/unet/diffusion_pytorch_model.safetensors")
    meta = json.loads(out.read_bytes(f"{stage2['checkpoint_uri']}/svd_dag_training.json"))
    assert meta["init"]["init"] == f"inflated from {stage1['checkpoint_uri']}"


def test_a_checkpoint_upload_that_died_is_finished_by_the_next_materialization(s3_world):
    """S3 cannot rename a folder into place: a checkpoint counts once its `.published` listing
    exists. Left as an upload killed half-way leaves it (weights cut short, no listing), the
    next materialization of the same checkpoint finishes the folder instead of refusing it or
    taking the cut-short weights as done."""
    cat = Catalog.from_settings(s3_world["settings"])
    if "checkpoints" not in cat.tables():
        pytest.skip("needs the training test above")
    [row] = cat.rows("SELECT * FROM checkpoints WHERE asset = 'stage2_video_checkpoint'")
    out, uri = Store("s3://curated/svd"), row["checkpoint_uri"]
    listing = json.loads(out.read_bytes(f"{uri}/.published"))["files"]
    assert {"svd_dag_training.json", "unet/diffusion_pytorch_model.safetensors"} <= set(listing)
    weights = f"{uri}/unet/diffusion_pytorch_model.safetensors"
    whole = out.read_bytes(weights)
    assert listing["unet/diffusion_pytorch_model.safetensors"]["sha256"] == hashlib.sha256(whole).hexdigest()
    out.fs.rm(f"{uri}/.published")
    out.write_bytes(weights, whole[: len(whole) // 2])
    from svd_dag.lineage.verify import lineage_verify

    seen = {(p["kind"], p["uri"], p["problem"].split(":")[0]) for p in lineage_verify(cat, "stage2_video_checkpoint")["problems"]}
    assert seen == {("weights", uri, "hash mismatch"), ("published", uri, "no .published listing")}

    result = s3_world["defs"].resolve_job_def("training").execute_in_process(
        instance=s3_world["instance"], asset_selection=[dg.AssetKey("stage2_video_checkpoint")],
        run_config={"ops": {"stage2_video_checkpoint": {"config": {"steps": 2, "checkpoint_every": 2}}}})
    assert result.success
    assert meta_of(result, "stage2_video_checkpoint")["checkpoint_uri"] == uri
    out.fs.invalidate_cache()
    assert out.read_bytes(weights) == whole
    published = json.loads(out.read_bytes(f"{uri}/.published"))["files"]
    assert set(published) == set(listing)
    assert {k: v for k, v in published.items() if k.endswith(".safetensors")} == \
        {k: v for k, v in listing.items() if k.endswith(".safetensors")}  # the same weights (run records differ)
    for name, entry in published.items():  # and the listing tells what is there now
        assert hashlib.sha256(out.read_bytes(f"{uri}/{name}")).hexdigest() == entry["sha256"], name


def test_two_machines_train_one_checkpoint_and_resume_from_the_state_on_s3(s3_world, tmp_path):
    """Two "machines" on loopback (two `accelerate launch --num_machines 2` with their own
    local scratch), one process each: one materialization, one checkpoint. Killed after the
    first state reached S3 and with every local disk wiped (fresh pods), the step's retry
    resumes from that state on both ranks."""
    scratch = tmp_path / "scratch"
    settings = dataclasses.replace(s3_world["settings"], train_machines=2, train_scratch=str(scratch))
    job = build_defs(settings).resolve_job_def("training")
    config = {"ops": {"stage1_image_checkpoint": {"config": {"steps": 16, "checkpoint_every": 4, "seed": 11,
                                                               "vae_fit_steps": 10}}}}
    out = Store("s3://curated/svd")
    root = "curated/svd/train_state/stage1_image_checkpoint"

    def complete() -> set:
        out.fs.invalidate_cache()
        return {p for p in out.fs.find(root) if p.endswith("/.complete")} if out.fs.exists(root) else set()

    before, at_kill, files_at_kill = complete(), [], []

    def saved() -> set:
        return complete() - before

    def wipe_local_disks() -> None:
        at_kill.extend(sorted(saved()))
        files_at_kill.extend(out.fs.find(root))
        shutil.rmtree(scratch)

    result, killed = run_killed(lambda: job.execute_in_process(
        instance=s3_world["instance"], run_config=config, asset_selection=[dg.AssetKey("stage1_image_checkpoint")]),
        saved, after_kill=wipe_local_disks)
    assert killed and result.success and retries_of(result) == 1
    steps_saved = sorted(int(p.split("/step-")[1].split("/")[0]) for p in at_kill)
    [state] = {p.split("/step-")[0] for p in at_kill}
    assert steps_saved and steps_saved[0] < 16
    assert len(result.get_asset_materialization_events()) == 1
    meta = meta_of(result, "stage1_image_checkpoint")
    assert meta["processes"] == 2 and steps_saved[0] <= meta["resumed_from"] < 16 and meta["steps"] == 16
    assert meta["samples_seen"] == 16 * meta["global_batch"]
    assert meta["state_uri"] == f"s3://{state}"
    assert out.exists(f"{meta['checkpoint_uri']}/unet/diffusion_pytorch_model.safetensors")
    first = f"step-{steps_saved[0]}"
    assert {f"{first}/random_states_{rank}.pkl" for rank in (0, 1)} <= \
        {p.removeprefix(state + "/") for p in files_at_kill}  # each machine put its own part
    machines = {p.name for p in scratch.glob("*/*/machine-*")}
    assert machines == {"machine-0", "machine-1"}  # each machine read the state into its own scratch


def test_lineage_up_and_verify_read_an_s3_record(s3_world):
    """The audit over s3:// storage: `up` reaches the raw s3 video, `verify` re-hashes weights,
    manifests, shard members and the raw video on S3, and a changed raw object is reported."""
    from svd_dag.lineage.up import lineage_up
    from svd_dag.lineage.verify import lineage_verify

    cat = Catalog.from_settings(s3_world["settings"])
    if "checkpoints" not in cat.tables():
        pytest.skip("needs the training test above")
    report = lineage_up(cat, "stage2_video_checkpoint", store=Store("s3://curated/svd"))
    assert report["missing"] == [] and [link["asset"] for link in report["chain"]] == [
        "stage2_video_checkpoint", "stage1_image_checkpoint"]
    raw = Store("s3://raw-videos/incoming")
    bikes = raw.read_bytes("bikes.mp4")
    videos = {v["uri"]: v["sha256"] for vs in report["raw_videos"].values() for v in vs}
    assert videos == {"s3://raw-videos/incoming/bikes.mp4": hashlib.sha256(bikes).hexdigest()}
    clean = lineage_verify(cat, "stage2_video_checkpoint")
    assert clean["ok"] and {"weights", "published", "manifest", "shard_member", "raw_video"} <= set(clean["checked"])
    raw.write_bytes("bikes.mp4", bikes[:-1000])  # replaced in place
    try:
        changed = lineage_verify(cat, "stage2_video_checkpoint")
        assert [(p["kind"], p["uri"], p["problem"]) for p in changed["problems"]] == [
            ("raw_video", "s3://raw-videos/incoming/bikes.mp4", "hash mismatch")]
    finally:
        raw.write_bytes("bikes.mp4", bikes)
