"""`svd-dag lineage up | down | verify` on the real trained chain, and the per-checkpoint record:
clips_used.parquet, DATASHEET.md, lineage.json, the code that trained it, the blocking checks.
Tampering (a raw video deleted or replaced in place, one byte of a manifest, a shard and a
weight file) is restored in `finally`: the session's catalog stays as the other tests expect."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import pytest

from conftest import STAGES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(settings) -> dict:
    return {**os.environ, "SVD_DAG_HOME": settings.home, "SVD_DAG_RAW_URI": settings.raw_uri,
            "SVD_DAG_MODELS_URI": settings.models_uri}


def _cli(settings, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "svd_dag.cli", "lineage", *args], env=_env(settings), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"svd-dag lineage {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _raw_files(settings) -> dict[str, str]:
    return {_sha256(os.path.join(settings.raw_uri, n)): os.path.join(settings.raw_uri, n)
            for n in os.listdir(settings.raw_uri)}


def test_up_follows_stage3_to_stage1_and_names_the_raw_bytes_code_and_annotators(curated, trained):
    settings, cat = curated["settings"], curated["cat"]
    report = json.loads(_cli(settings, "up", "stage3_hq_checkpoint", "--json").stdout)
    assert [link["asset"] for link in report["chain"]] == ["stage3_hq_checkpoint", "stage2_video_checkpoint",
                                                           "stage1_image_checkpoint"]
    assert report["missing"] == []
    rows = {r["asset"]: r for r in cat.rows("SELECT * FROM checkpoints WHERE variant = ''")}
    for link in report["chain"]:
        assert link["data_version"] == rows[link["asset"]]["data_version"]
        assert link["dataset_version"] in report["datasets"]
        code = link["code"]
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert code["git_commit"] == (head or "unknown")
        assert code["lock_sha256"] == _sha256(os.path.join(REPO, "requirements", "lock.txt"))
        assert set(code["libraries"]) >= {"torch", "diffusers", "accelerate"}
    hq = report["datasets"][report["chain"][0]["dataset_version"]]
    assert hq["asset"] == "hq_finetune_set" and hq["parent_dataset_version"] in report["datasets"]
    lvd = report["datasets"][hq["parent_dataset_version"]]
    assert lvd["asset"] == "lvd_f" and set(lvd["removed_by_criterion"]) == {"motion", "text", "aesthetics",
                                                                             "caption_similarity"}
    names = {a["annotator"] for a in lvd["annotators"]}
    assert {"farneback", "craft", "captioners"} <= names
    assert all(a["random_weights"] == (a["weights"] == "random") for a in lvd["annotators"])
    assert all(a["code_version"] and a["placement"] for a in lvd["annotators"])
    [craft] = [a for a in lvd["annotators"] if a["annotator"] == "craft"]  # real weights: their full sha256
    from svd_dag.curation.ocr import DETECTOR_FILE, craft_weights_dir
    assert json.loads(craft["weights_sha256"]) == {DETECTOR_FILE: _sha256(os.path.join(craft_weights_dir(), DETECTOR_FILE))}
    # Raw sha256s in full, and they are the files' real hashes.
    files = _raw_files(settings)
    stage1 = report["raw_videos"][f"stage1_image_checkpoint@{rows['stage1_image_checkpoint']['data_version']}"]
    assert stage1 and all(v["sha256"] in files and len(v["sha256"]) == 64 for v in stage1)
    used = cat.rows("SELECT video_sha256, count(*) AS n FROM checkpoint_clips WHERE asset = 'stage1_image_checkpoint' "
                    "AND data_version = ? AND status = 'used' GROUP BY 1", [rows["stage1_image_checkpoint"]["data_version"]])
    assert {r["video_sha256"]: r["n"] for r in used} == {v["sha256"]: v["clips_used"] for v in stage1 if v["clips_used"]}
    text = _cli(settings, "up", "stage3_hq_checkpoint").stdout
    assert stage1[0]["sha256"] in text and "every link resolves" in text


def test_every_checkpoint_folder_holds_what_it_trained_on_and_its_datasheet(curated, trained):
    cat = curated["cat"]
    for row in cat.rows("SELECT * FROM checkpoints WHERE variant = '' AND dataset_asset IN ('lvd_f', 'hq_finetune_set')"):
        folder = row["checkpoint_uri"]
        used = pq.read_table(os.path.join(folder, "clips_used.parquet")).to_pylist()
        manifest = pq.read_table(row["manifest_uri"]).to_pylist()
        assert sorted(u["clip_id"] for u in used) == sorted(m["clip_id"] for m in manifest)
        assert {u["status"] for u in used} <= {"used", "skipped", "not_drawn"} and any(u["status"] == "used" for u in used)
        assert all(u["reason"] for u in used if u["status"] != "used")
        assert row["clips_used_sha256"] == _sha256(os.path.join(folder, "clips_used.parquet"))
        sheet = open(os.path.join(folder, "DATASHEET.md")).read()
        assert row["data_version"] in sheet and "PASSED" in sheet
        lineage = json.load(open(os.path.join(folder, "lineage.json")))
        assert lineage["checkpoint"]["data_version"] == row["data_version"] and lineage["eval_leak_check"]["passed"]
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
              for e in trained.get_asset_check_evaluations()}
    for stage in STAGES:
        assert checks[(stage, "lineage_complete")] and checks[(stage, "no_eval_leak")]


def test_mlflow_holds_the_parent_model_and_the_datasheet(curated, trained):
    import mlflow

    client = mlflow.MlflowClient(curated["settings"].mlflow_tracking_uri)
    rows = {r["asset"]: r for r in curated["cat"].rows("SELECT * FROM checkpoints WHERE variant = ''")}
    stage2 = client.get_run(rows["stage2_video_checkpoint"]["mlflow_run_id"])
    assert [m.model_id for m in stage2.inputs.model_inputs] == [rows["stage1_image_checkpoint"]["mlflow_model_id"]]
    assert {"DATASHEET.md", "lineage.json"} <= {a.path for a in client.list_artifacts(stage2.info.run_id)}


def test_down_from_a_raw_video_reaches_its_clips_outcomes_and_every_checkpoint(curated, trained):
    settings, cat = curated["settings"], curated["cat"]
    bikes = os.path.join(settings.raw_uri, "bikes.mp4")
    report = json.loads(_cli(settings, "down", bikes, "--json").stdout)
    [sha] = report["videos"]
    assert sha == _sha256(bikes)
    clips = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM clips WHERE video_sha256 = ?", [sha])}
    assert {c["clip_id"] for c in report["clips"]} == clips
    lvd = cat.rows("SELECT DISTINCT dataset_version FROM lvd_f")[0]["dataset_version"]
    outcomes = {c["clip_id"]: c["outcome"] for c in report["datasets"][lvd]["clips"]}
    held = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f_eval")}
    kept = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f")}
    for clip_id, outcome in outcomes.items():
        assert outcome == ("held out for evaluation" if clip_id in held else "kept" if clip_id in kept else "removed")
    fed = {c["asset"] for c in report["checkpoints"]}
    assert {"stage2_video_checkpoint", "stage3_hq_checkpoint"} <= fed  # through stage I at least
    assert sha in _cli(settings, "down", sha).stdout


def test_an_eval_clip_planted_in_a_parents_training_clips_fails_the_check_and_blocks_registration(curated, trained):
    from svd_dag.lineage.datasheet import judge

    cat = curated["cat"]
    stage1 = cat.rows("SELECT * FROM checkpoints WHERE asset = 'stage1_image_checkpoint' AND variant = ''")[0]
    stage3 = cat.rows("SELECT * FROM checkpoints WHERE asset = 'stage3_hq_checkpoint' AND variant = ''")[0]
    held = cat.rows("SELECT clip_id, video_sha256 FROM lvd_f_eval ORDER BY clip_id LIMIT 1")[0]
    assert judge(cat, "stage3_hq_checkpoint", stage3["data_version"]).no_leak
    plant = ("INSERT INTO checkpoint_clips VALUES (?, '', ?, ?, ?, 'planted.mp4', 'used', NULL, 1)",
             [stage1["asset"], stage1["data_version"], held["clip_id"], held["video_sha256"]])
    cat.write(lambda con: con.execute(*plant))
    try:
        verdict = judge(cat, "stage3_hq_checkpoint", stage3["data_version"])
        assert not verdict.no_leak and verdict.leaks["leaks"][0]["clip_id"] == held["clip_id"]
        assert verdict.leaks["leaks"][0]["checkpoint"] == f"stage1_image_checkpoint@{stage1['data_version']}"
        curated["defs"].resolve_job_def("model_quality").execute_in_process(  # other families may fail their check
            instance=curated["instance"], asset_selection=[dg.AssetKey("registered_checkpoints")], raise_on_error=False)
        [refused] = cat.rows("SELECT * FROM registry_candidates WHERE family = 'stage3_hq_checkpoint'")
        assert not refused["passes"] and refused["version"] == "" and "evaluation leak" in refused["why"]
    finally:
        cat.write(lambda con: con.execute("DELETE FROM checkpoint_clips WHERE video_uri = 'planted.mp4'"))
    assert judge(cat, "stage3_hq_checkpoint", stage3["data_version"]).no_leak


def _flip_byte(path: str, at: int | None = None) -> bytes:
    data = open(path, "rb").read()
    middle = len(data) // 2 if at is None else at
    with open(path, "wb") as f:
        f.write(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    return data


def test_verify_reports_a_deleted_or_replaced_raw_video_and_a_flipped_byte(curated, trained, tmp_path):
    from svd_dag.training.data import ClipDataset, RawVideoChangedError

    settings, cat = curated["settings"], curated["cat"]
    clean = _cli(settings, "verify", "stage3_hq_checkpoint", "--json")
    report = json.loads(clean.stdout)
    assert report["ok"] and report["checked"]["weights"] == 3 and report["checked"]["raw_video"] >= 1
    stage1 = cat.rows("SELECT * FROM checkpoints WHERE asset = 'stage1_image_checkpoint' AND variant = ''")[0]
    raw = cat.rows("SELECT DISTINCT video_uri FROM checkpoint_clips WHERE data_version = ? AND status = 'used' "
                   "ORDER BY 1", [stage1["data_version"]])
    video = raw[0]["video_uri"]
    weights = os.path.join(stage1["checkpoint_uri"], "unet", "diffusion_pytorch_model.safetensors")
    manifest = cat.rows("SELECT manifest_uri FROM dataset_versions WHERE dataset_version = ?",
                        [stage1["dataset_version"]])[0]["manifest_uri"]
    moved = tmp_path / "moved.mp4"

    def problems(*args):
        out = _cli(settings, "verify", *args, "--json", check=False)
        assert out.returncode == (1 if json.loads(out.stdout)["problems"] else 0)
        return {(p["kind"], p["uri"]): p["problem"] for p in json.loads(out.stdout)["problems"]}

    shutil.move(video, moved)
    try:
        assert problems("stage3_hq_checkpoint") == {("raw_video", video): "missing"}
    finally:
        shutil.move(moved, video)
    original = open(video, "rb").read()
    try:
        with open(video, "wb") as f:  # replaced in place: same name, other bytes
            f.write(original[: len(original) // 2])
        assert problems("stage3_hq_checkpoint") == {("raw_video", video): "hash mismatch"}
        rows = [r for r in pq.read_table(manifest).to_pylist() if r["video_uri"] == video]
        with pytest.raises(RawVideoChangedError, match="changed since it was inventoried"):
            ClipDataset(rows, num_frames=2, target_fps=8.0, height=32, width=48)[0]
    finally:
        with open(video, "wb") as f:
            f.write(original)
    member = cat.rows("SELECT s.* FROM clip_shards s JOIN shard_indexes i USING (encode_key) WHERE i.index_uri = ? "
                      "ORDER BY s.clip_id LIMIT 1", [stage1["shard_index_uri"]])[0]
    shard = (member["shard_uri"], "shard_member", f"{member['shard_uri']}#{member['shard_member']}",
             member["shard_offset"] + member["shard_size"] // 2)
    for path, kind, uri, at in ((manifest, "manifest", manifest, None), (weights, "weights", stage1["checkpoint_uri"], None),
                                shard):
        before = _flip_byte(path, at)
        try:
            assert problems("stage3_hq_checkpoint") == {(kind, uri): "hash mismatch"}
        finally:
            open(path, "wb").write(before)
    assert json.loads(_cli(settings, "verify", "--json").stdout)["ok"]
