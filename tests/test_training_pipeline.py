"""The training half through Dagster: three stages as real `accelerate launch` subprocesses,
checkpoints that load back in diffusers, MLflow as the record, resume after a kill."""

import dataclasses
import json
import os

import dagster as dg

from svd_dag.definitions import build_defs

from kill_training import retries_of, run_killed
from conftest import STAGES, meta_of as _meta, run_config as _ops


def _rows_of(result, cat) -> dict:
    """The checkpoints rows this run wrote (other tests of the session add more versions)."""
    versions = {e.event_specific_data.materialization.tags["dagster/data_version"]
                for e in result.get_asset_materialization_events()}
    return {r["asset"]: r for r in cat.rows("SELECT * FROM checkpoints WHERE data_version IN (SELECT unnest(?))",
                                            [sorted(versions)])}


def test_three_stages_write_checkpoints_that_load_in_diffusers(trained):
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNet2DConditionModel, UNetSpatioTemporalConditionModel

    for stage, cls in zip(STAGES, [UNet2DConditionModel, UNetSpatioTemporalConditionModel, UNetSpatioTemporalConditionModel]):
        meta = _meta(trained, stage)
        folder = meta["checkpoint_uri"]
        assert meta["steps"] == 4
        for sub in ("unet", "unet_ema"):
            model = cls.from_pretrained(os.path.join(folder, sub))
            assert all(torch.isfinite(p).all() for p in model.parameters())
        AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(folder, "vae"))
    assert "inflated from" in _meta(trained, "stage2_video_checkpoint")["init"]
    assert _meta(trained, "stage2_video_checkpoint")["new_params"] > 0


def test_checkpoint_lineage_links_weights_to_dataset_and_parent(trained, curated):
    rows = _rows_of(trained, curated["cat"])
    assert rows["stage2_video_checkpoint"]["parent_checkpoint_uri"] == rows["stage1_image_checkpoint"]["checkpoint_uri"]
    assert rows["stage3_hq_checkpoint"]["parent_data_version"] == rows["stage2_video_checkpoint"]["data_version"]
    assert rows["stage3_hq_checkpoint"]["dataset_asset"] == "hq_finetune_set"
    versions = {r["dataset_version"] for r in curated["cat"].rows("SELECT dataset_version FROM dataset_versions")}
    assert {r["dataset_version"] for r in rows.values()} <= versions
    for stage in STAGES:
        [mat] = [e.event_specific_data.materialization for e in trained.get_asset_materialization_events()
                 if e.event_specific_data.materialization.asset_key.to_user_string() == stage]
        assert mat.tags["dagster/data_version"] == rows[stage]["data_version"]  # = hash of the saved weights


def test_mlflow_holds_params_per_step_loss_dataset_and_logged_model(trained, curated):
    import mlflow

    client = mlflow.MlflowClient(curated["settings"].mlflow_tracking_uri)
    rows = _rows_of(trained, curated["cat"])
    for stage in STAGES:
        run = client.get_run(rows[stage]["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["dagster.asset"] == stage
        assert run.data.params["steps"] == "4"
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == [1, 2, 3, 4]
        assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest == rows[stage]["dataset_version"]
        model = client.get_logged_model(rows[stage]["mlflow_model_id"])
        assert model.tags["svd_dag.checkpoint_uri"] == rows[stage]["checkpoint_uri"]


def _state_dirs(root):
    out = []
    for base, dirs, _ in os.walk(root):
        out += [os.path.join(base, d) for d in dirs if d.startswith("step-")]
    return out


def test_a_killed_training_is_retried_and_resumes_from_its_saved_state_across_a_comment_edit(trained, curated):
    """Killed after its first saved state (a lost node, an OOM kill); the training code then gets
    a comment-only edit. Dagster retries the step (the launcher asks for it when the process
    died by a signal) and the retry resumes from that state (the state key names the
    training's inputs, not its source files); the checkpoint's code record names the edited
    source, and the killed attempt's MLflow run ended FAILED."""
    import mlflow

    from svd_dag.lineage.code_record import PACKAGE_DIR, source_sha256

    settings, instance = curated["settings"], curated["instance"]
    state_root = os.path.join(settings.storage_uri, "train_state", "stage1_image_checkpoint")
    job = curated["defs"].resolve_job_def("training")
    config = _ops(stage1_image_checkpoint={"steps": 30, "checkpoint_every": 5, "seed": 1, "vae_fit_steps": 10})
    before = set(_state_dirs(state_root))
    source = PACKAGE_DIR / "training" / "train.py"
    original, digest_before = source.read_bytes(), source_sha256()

    def saved() -> list:
        return [d for d in set(_state_dirs(state_root)) - before if os.path.exists(os.path.join(d, ".complete"))]

    at_kill: list = []

    def edit_a_comment() -> None:
        at_kill.extend(int(d.rsplit("-", 1)[1]) for d in saved())
        source.write_bytes(original + b"\n# a comment-only edit made by the resume test\n")

    try:
        result, killed = run_killed(lambda: job.execute_in_process(
            instance=instance, run_config=config, asset_selection=[dg.AssetKey("stage1_image_checkpoint")]),
            saved, after_kill=edit_a_comment)
        edited = source_sha256()
    finally:
        source.write_bytes(original)
    assert killed and result.success and retries_of(result) == 1
    meta = _meta(result, "stage1_image_checkpoint")
    assert at_kill and min(at_kill) <= meta["resumed_from"] < 30 and meta["steps"] == 30
    code = meta["code"] if isinstance(meta["code"], dict) else json.loads(meta["code"])
    assert code["source_sha256"] == edited != digest_before
    runs = mlflow.MlflowClient(settings.mlflow_tracking_uri).search_runs(
        experiment_ids=[e.experiment_id for e in mlflow.MlflowClient(settings.mlflow_tracking_uri).search_experiments()],
        filter_string=f"tags.`dagster.run_id` = '{result.run_id}'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_two_cpu_processes_train_one_checkpoint(curated):
    defs = build_defs(dataclasses.replace(curated["settings"], train_processes=2))
    result = defs.resolve_job_def("training").execute_in_process(
        instance=curated["instance"], asset_selection=[dg.AssetKey("stage1_image_checkpoint")],
        run_config=_ops(stage1_image_checkpoint={"steps": 4, "checkpoint_every": 2, "seed": 2, "vae_fit_steps": 10}))
    assert result.success
    mats = result.get_asset_materialization_events()
    assert len(mats) == 1
    meta = _meta(result, "stage1_image_checkpoint")
    assert meta["samples_seen"] == 4 * 4 * 2  # steps x batch x processes
    assert os.path.exists(os.path.join(meta["checkpoint_uri"], "unet", "diffusion_pytorch_model.safetensors"))


def test_stage2_hires_phase_continues_at_320x576_shapes_from_the_base_checkpoint(trained, curated):
    """SVD's stage-II hi-res phase: the base stage II, then the same asset continues from it at the
    hi-res preset (tiny: 40x72) with ln sigma ~ N(0, 1); the asset reports the hi-res checkpoint."""
    import json
    import os

    result = curated["defs"].resolve_job_def("training").execute_in_process(
        instance=curated["instance"], asset_selection=[dg.AssetKey("stage2_video_checkpoint")],
        run_config=_ops(stage2_video_checkpoint={"steps": 2, "checkpoint_every": 2, "seed": 3, "hires_phase": True}))
    assert result.success
    meta = _meta(result, "stage2_video_checkpoint")
    config = json.load(open(os.path.join(meta["checkpoint_uri"], "svd_dag_training.json")))["config"]
    assert (config["height"], config["width"], config["p_mean"], config["p_std"]) == (40, 72, 0.0, 1.0)
    version = result.get_asset_materialization_events()[0].event_specific_data.materialization.tags["dagster/data_version"]
    rows = {r["variant"]: r for r in curated["cat"].rows(
        "SELECT * FROM checkpoints WHERE asset = 'stage2_video_checkpoint' AND data_version = ?", [version])}
    assert rows[""]["parent_checkpoint_uri"] == rows["hires"]["parent_checkpoint_uri"]  # the base phase's weights
    base = curated["cat"].rows("SELECT * FROM checkpoints WHERE checkpoint_uri = ?", [rows[""]["parent_checkpoint_uri"]])
    assert base and base[0]["asset"] == "stage2_video_checkpoint" and base[0]["steps"] == 2
