"""The fine-tunes through Dagster, after the stage checkpoints: I2V (a diffusers pipeline
folder), interpolation, multi-view on synthetic orbits, camera-motion LoRAs from the
curation flow; each writes weights that load back and renders sample videos."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import meta_of, run_config

FINETUNES = ["i2v_checkpoint", "interpolation_checkpoint", "multiview_checkpoint", "camera_motion_loras"]
QUICK = {"steps": 3, "checkpoint_every": 3, "sample_count": 1}


@pytest.fixture(scope="module")
def finetuned(curated, trained):
    result = curated["defs"].resolve_job_def("finetunes").execute_in_process(
        instance=curated["instance"],
        run_config=run_config(orbit_renders={"synthetic_objects": 4, "synthetic_views": 12},
                              multiview_eval={"steps": 3}, **{name: QUICK for name in FINETUNES}),
    )
    assert result.success
    return result


def _rows(cat):
    return {(r["asset"], r["variant"]): r for r in cat.rows("SELECT * FROM checkpoints")}


def test_camera_labels_follow_the_flow_rule(curated, finetuned):
    rows = curated["cat"].rows("SELECT c.video_uri, l.label FROM camera_motion_labels l JOIN clips c USING (clip_id)")
    by_video = {}
    for r in rows:
        by_video.setdefault(os.path.basename(r["video_uri"]), set()).add(r["label"])
    assert by_video["static.mp4"] == {"static"}
    assert by_video["pan.mp4"] == {"horizontal_pan"}
    assert by_video["zoom.mp4"] == {"zoom"}
    assert all(r["rule"].startswith("static_max_px=") for r in curated["cat"].rows("SELECT rule FROM camera_motion_labels"))


def test_every_finetune_writes_weights_and_sample_videos(finetuned):
    from svd_dag.sampling.video_io import decode_mp4

    for asset in FINETUNES:
        meta = meta_of(finetuned, asset)
        assert "data:image/gif;base64," in meta["sample_preview"], asset
        videos = meta["sample_videos"]
        assert videos, asset
        frames = decode_mp4(open(videos[0], "rb").read())
        assert frames.ndim == 4 and frames.shape[0] >= 4 and frames.shape[-1] == 3
    check = [c for c in finetuned.get_asset_check_evaluations() if c.check_name == "adapter_per_label"]
    assert check and check[0].passed


def test_i2v_checkpoint_is_a_diffusers_pipeline_that_matches_our_sampler(finetuned):
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    from svd_dag.sampling.euler import Guidance
    from svd_dag.sampling.generate import generate, load_video_model

    folder = meta_of(finetuned, "i2v_checkpoint")["checkpoint_uri"]
    index = json.load(open(os.path.join(folder, "model_index.json")))
    assert {"unet", "vae", "image_encoder", "feature_extractor", "scheduler"} <= set(index)
    pipe = StableVideoDiffusionPipeline.from_pretrained(folder)
    assert pipe.unet.config.in_channels == 8
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    latents = torch.randn((1, 4, 4, 8, 12), generator=torch.Generator().manual_seed(5))
    theirs = pipe(Image.fromarray(image), height=32, width=48, num_frames=4, num_inference_steps=4,
                  min_guidance_scale=1.0, max_guidance_scale=2.5, noise_aug_strength=0.0, latents=latents,
                  output_type="np").frames[0]
    ours = generate(load_video_model(folder), [image], num_frames=4, height=32, width=48, steps=4,
                    guidance=Guidance(1.0, 2.5), seed=5, noise_aug_strength=0.0)
    assert theirs.shape == ours.shape == (4, 32, 48, 3)
    assert np.abs((theirs * 255).round() - ours.astype(float)).max() <= 1.0


def test_interpolation_and_multiview_weights_load_back_with_their_inputs(finetuned):
    from diffusers import UNetSpatioTemporalConditionModel

    interp = UNetSpatioTemporalConditionModel.from_pretrained(
        os.path.join(meta_of(finetuned, "interpolation_checkpoint")["checkpoint_uri"], "unet"))
    assert interp.config.in_channels == 9  # latent + two conditioning latents' channels + mask
    mv = UNetSpatioTemporalConditionModel.from_pretrained(
        os.path.join(meta_of(finetuned, "multiview_checkpoint")["checkpoint_uri"], "unet"))
    assert mv.add_embedding.linear_1.in_features == 4 * mv.config.addition_time_embed_dim  # + camera elevation
    for model in (interp, mv):
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_camera_adapter_is_small_and_changes_the_i2v_output(curated, finetuned):
    from svd_dag.sampling.generate import generate, load_video_model

    rows = _rows(curated["cat"])
    i2v = rows[("i2v_checkpoint", "")]["checkpoint_uri"]
    adapter = os.path.join(rows[("camera_motion_loras", "zoom")]["checkpoint_uri"], "adapter")
    assert rows[("camera_motion_loras", "zoom")]["parent_checkpoint_uri"] == i2v
    weights = os.path.getsize(os.path.join(adapter, "adapter_model.safetensors"))
    unet = os.path.getsize(os.path.join(i2v, "unet", "diffusion_pytorch_model.safetensors"))
    assert weights < unet / 4
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    kwargs = dict(num_frames=4, height=32, width=48, steps=3, seed=0)
    base = generate(load_video_model(i2v), [image], **kwargs)
    again = generate(load_video_model(i2v), [image], **kwargs)
    steered = generate(load_video_model(i2v, adapter=adapter), [image], **kwargs)
    assert np.array_equal(base, again)  # sampling is deterministic: any change below is the adapter's
    assert np.abs(base.astype(int) - steered.astype(int)).mean() > 0.01


def test_finetune_lineage_reaches_the_stage_checkpoints_and_mlflow_holds_the_samples(curated, finetuned):
    import mlflow

    rows = _rows(curated["cat"])
    assert rows[("i2v_checkpoint", "")]["parent_asset"] == "stage2_video_checkpoint"
    assert rows[("interpolation_checkpoint", "")]["parent_asset"] == "i2v_checkpoint"
    assert rows[("multiview_checkpoint", "")]["dataset_asset"] == "orbit_renders"
    assert {v for (a, v) in rows if a == "camera_motion_loras"} == {"static", "horizontal_pan", "zoom"}
    sources = {r["source"] for r in curated["cat"].rows("SELECT source FROM orbit_renders")}
    assert sources == {"synthetic-procedural"}
    client = mlflow.MlflowClient(curated["settings"].mlflow_tracking_uri)
    run_id = rows[("i2v_checkpoint", "")]["mlflow_run_id"]
    names = {os.path.basename(a.path) for a in client.list_artifacts(run_id, "samples")}
    assert "samples.json" in names and any(n.endswith(".mp4") for n in names) and any(n.endswith(".gif") for n in names)
    assert client.get_run(run_id).data.metrics["sample_seconds_per_video"] > 0


def test_lineage_up_of_i2v_names_the_bundled_videos_and_every_finetune_passes_its_checks(curated, finetuned,
                                                                                        bikes_path):
    """The audit on the fine-tunes: i2v reaches the bundled bikes.mp4 by its real sha256; the LoRAs
    and the multi-view model (orbit objects, no raw video) have complete lineage and no leak."""
    import hashlib

    from svd_dag.lineage.up import lineage_up

    report = lineage_up(curated["cat"], "i2v_checkpoint")
    assert [link["asset"] for link in report["chain"]] == ["i2v_checkpoint", "stage2_video_checkpoint",
                                                           "stage1_image_checkpoint"] and report["missing"] == []
    bikes = hashlib.sha256(open(bikes_path, "rb").read()).hexdigest()
    assert bikes in {v["sha256"] for videos in report["raw_videos"].values() for v in videos}
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in finetuned.get_asset_check_evaluations()}
    for name in FINETUNES:
        assert checks[(name, "lineage_complete")] and checks[(name, "no_eval_leak")], name
    assert lineage_up(curated["cat"], "multiview_checkpoint")["missing"] == []


def _train_in_process(tmp_path, name: str, init_from: str, manifest: str, **overrides) -> str:
    from accelerate import Accelerator

    from svd_dag.training.config import STAGE_PRESETS, TrainConfig
    from svd_dag.training.train import train

    preset = {**STAGE_PRESETS["interpolation"]["tiny"], "sample_count": 0, **overrides}
    cfg = TrainConfig(profile="tiny", manifest_uri=manifest, output_uri=str(tmp_path / "out" / name),
                      state_dir=str(tmp_path / "state" / name), init_from=init_from, **preset).validate()
    os.makedirs(cfg.state_dir)
    return train(cfg, Accelerator(cpu=True))["checkpoint_uri"]


def test_interpolation_keeps_the_given_first_and_last_frames_once_trained(curated, finetuned, tmp_path):
    """Trained on two clips, the model's first and last frames match the given frames (as the
    VAE reproduces them) far better than the same model before training.

    Measured (mean abs error in 0-255 units, untrained -> 60 steps): 26.4 -> 11.0 here, 29.3 ->
    14.8 on CI (other thread counts, other numerics); 30 steps give 12.0, 120 give 10.6, a
    plateau the tiny VAE sets. Hence 0.65 x: well above both ratios (0.42, 0.50), and an
    untrained model (1.0) fails it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from svd_dag.sampling.generate import decode_latents, generate, load_video_model, to_model_pixels
    from svd_dag.training.data import ClipDataset

    cat = curated["cat"]
    i2v = _rows(cat)[("i2v_checkpoint", "")]["checkpoint_uri"]
    manifest_uri = cat.rows("SELECT manifest_uri FROM dataset_versions WHERE asset = 'hq_finetune_set' "
                            "ORDER BY created_at DESC LIMIT 1")[0]["manifest_uri"]
    manifest = pq.read_table(manifest_uri)
    rows = [r for r in manifest.to_pylist() if "bikes" in r["video_uri"]][:2]
    small = tmp_path / "two_clips.parquet"
    pq.write_table(manifest.filter(pc.is_in(manifest.column("clip_id"), pa.array([r["clip_id"] for r in rows]))), small)
    untrained = _train_in_process(tmp_path, "untrained", i2v, str(small), steps=1, learning_rate=0.0)
    trained = _train_in_process(tmp_path, "trained", i2v, str(small), steps=60, checkpoint_every=60)
    refs = ClipDataset(rows, 5, 8.0, 32, 48)
    errors = {}
    for name, folder in (("untrained", untrained), ("trained", trained)):
        model = load_video_model(folder)
        err = []
        for i in range(len(rows)):
            frames = refs.reference(i)[1]
            out = generate(model, [frames[0], frames[-1]], num_frames=5, height=32, width=48, steps=10, seed=0)
            with torch.no_grad():  # what the VAE makes of the given frames, decoded in the same 5-frame context
                pixels = torch.stack([to_model_pixels(f, 32, 48) for f in frames])
                latents = model.vae.encode(pixels).latent_dist.mode() * model.vae.config.scaling_factor
                recon = decode_latents(model.vae, latents.unsqueeze(0), chunk=5)[0]
            recon = ((recon.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
            err.append(np.abs(out[[0, -1]].astype(float) - recon[[0, -1]]).mean())
        errors[name] = float(np.mean(err))
    assert errors["trained"] < 0.65 * errors["untrained"], errors


def test_multiview_is_scored_on_objects_it_never_trained_on(curated, finetuned):
    cat = curated["cat"]
    held = {r["object_id"] for r in cat.rows("SELECT object_id FROM orbit_renders WHERE split = 'eval'")}
    assert held and len(held) < len(cat.rows("SELECT object_id FROM orbit_renders"))
    folder = meta_of(finetuned, "multiview_checkpoint")["checkpoint_uri"]
    trained_cfg = json.load(open(os.path.join(folder, "svd_dag_training.json")))["config"]
    assert set(trained_cfg["orbits_exclude"]) == held
    rendered = {s["name"] for s in json.load(open(os.path.join(folder, "samples", "samples.json")))["samples"]}
    assert not rendered & held
    scores = cat.rows("SELECT * FROM multiview_results")
    assert {r["object_id"] for r in scores} == held
    assert all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 and r["num_views"] == 5 for r in scores)
    meta = meta_of(finetuned, "multiview_eval")
    assert meta["note"] == "synthetic-procedural objects" and "mlflow ui" in meta["mlflow_run"]
