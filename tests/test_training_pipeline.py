"""The training half through Dagster: three stages as real `accelerate launch` subprocesses,
checkpoints that load back in diffusers, MLflow as the record, resume after a kill."""

import os
import threading
import time

import dagster as dg
import psutil

from svd_dag.definitions import build_defs

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


def _kill_training_when_state_appears(state_root: str, before: set, stop: threading.Event, killed: list):
    while not stop.is_set():
        done = [d for d in set(_state_dirs(state_root)) - before if os.path.exists(os.path.join(d, ".complete"))]
        if done:
            for p in psutil.Process().children(recursive=True):
                try:
                    if "svd_dag.training.train" in " ".join(p.cmdline()):
                        p.kill()
                        killed.append(p.pid)
                except psutil.NoSuchProcess:
                    pass
            if killed:
                return
        time.sleep(0.05)


def _state_dirs(root):
    out = []
    for base, dirs, _ in os.walk(root):
        out += [os.path.join(base, d) for d in dirs if d.startswith("step-")]
    return out


def test_a_killed_training_resumes_from_its_saved_state(trained, curated):
    settings, instance = curated["settings"], curated["instance"]
    state_root = os.path.join(settings.home, "train_state", "stage1_image_checkpoint")
    job = curated["defs"].resolve_job_def("training")
    config = _ops(stage1_image_checkpoint={"steps": 30, "checkpoint_every": 5, "seed": 1, "vae_fit_steps": 10})
    stop, killed = threading.Event(), []
    before = set(_state_dirs(state_root))
    watcher = threading.Thread(target=_kill_training_when_state_appears, args=(state_root, before, stop, killed))
    watcher.start()
    first = job.execute_in_process(instance=instance, run_config=config, raise_on_error=False,
                                   asset_selection=[dg.AssetKey("stage1_image_checkpoint")])
    stop.set()
    watcher.join()
    assert killed and not first.success
    saved = sorted(int(d.rsplit("-", 1)[1]) for d in set(_state_dirs(state_root)) - before)
    assert saved and saved[0] < 30
    second = job.execute_in_process(instance=instance, run_config=config,
                                    asset_selection=[dg.AssetKey("stage1_image_checkpoint")])
    meta = _meta(second, "stage1_image_checkpoint")
    assert meta["resumed_from"] >= saved[0] and meta["resumed_from"] < 30
    assert meta["steps"] == 30


def test_two_cpu_processes_train_one_checkpoint(curated):
    settings = curated["settings"]
    os.environ["SVD_DAG_TRAIN_PROCESSES"] = "2"
    try:
        defs = build_defs(settings)
    finally:
        del os.environ["SVD_DAG_TRAIN_PROCESSES"]
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
