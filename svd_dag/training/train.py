"""One training entry point for every stage, run as `accelerate launch -m svd_dag.training.train`.

    accelerate launch ... -m svd_dag.training.train --config run.json

Loop: decode clips by reference -> VAE latents -> EDM v-form loss with one sigma per video
-> AdamW with warmup, gradient clipping, EMA. Resumable state (`accelerator.save_state`)
every `checkpoint_every` steps; a restart resumes from the newest state. Final weights
(raw and EMA) are saved as safetensors in diffusers layout next to the VAE that defines
the latent space. Only rank 0 opens the Dagster Pipes channel and talks to MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from typing import Any

import torch

from svd_dag.training.config import TrainConfig

log = logging.getLogger("svd_dag.train")
STATE_PREFIX = "step-"


def latest_state(state_dir: str) -> tuple[int, str] | None:
    found = []
    for path in glob.glob(os.path.join(state_dir, STATE_PREFIX + "*")):
        m = re.fullmatch(STATE_PREFIX + r"(\d+)", os.path.basename(path))
        if m and os.path.exists(os.path.join(path, ".complete")):
            found.append((int(m.group(1)), path))
    return max(found) if found else None


def _prune_states(state_dir: str, keep: int = 2) -> None:
    states = sorted(glob.glob(os.path.join(state_dir, STATE_PREFIX + "*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    for old in states[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def loss_summary(losses: list[float]) -> dict[str, float | None]:
    """Mean loss over the first and the last tenth of the steps (at least 5): per-step values
    are noisy because every step draws new noise levels."""
    if not losses:
        return {"first_loss": None, "final_loss": None}
    window = max(5, len(losses) // 10)
    return {"first_loss": sum(losses[:window]) / len(losses[:window]),
            "final_loss": sum(losses[-window:]) / len(losses[-window:])}


def _weights_digest(folder: str) -> str:
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.safetensors"), recursive=True)):
        h.update(os.path.relpath(path, folder).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 * 2**20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _build_unet(cfg: TrainConfig, latent_channels: int, text_width: int, store=None):
    from diffusers import UNet2DConditionModel, UNetSpatioTemporalConditionModel

    from svd_dag.training import unets

    parent = os.path.join(cfg.init_from, "unet") if cfg.init_from else None
    parent_class = json.load(open(os.path.join(parent, "config.json")))["_class_name"] if parent else None
    if cfg.stage == "image":
        if parent:
            return UNet2DConditionModel.from_pretrained(parent), {"init": f"continued from {cfg.init_from}"}
        if cfg.profile == "full":
            sd21 = store.find("sd21/unet/config.json") if store is not None else None
            if sd21 is None:
                raise FileNotFoundError("the full profile's stage I starts from SD 2.1's UNet: put its diffusers "
                                        "folder at <model store>/sd21/unet/ (config.json + safetensors)")
            return UNet2DConditionModel.from_pretrained(os.path.dirname(sd21)), {"init": "SD 2.1 UNet (model store)"}
        config = unets.tiny_image_unet_config(latent_channels=latent_channels, cross_attention_dim=text_width,
                                              sample_size=cfg.height // 4)
        return unets.build_image_unet(config), {"init": "random (tiny profile)"}
    if parent is None:
        raise ValueError("a video stage starts from a checkpoint: init_from is required")
    if parent_class == "UNet2DConditionModel":
        image_unet = UNet2DConditionModel.from_pretrained(parent)
        add_dim = 256 if cfg.profile == "full" else unets.TINY_ADDITION_TIME_EMBED_DIM
        video_config = unets.video_unet_config_from_image(dict(image_unet.config), num_frames=cfg.num_frames,
                                                          addition_time_embed_dim=add_dim)
        inflation = unets.inflate_image_unet(image_unet, video_config)
        return inflation.unet, {"init": f"inflated from {cfg.init_from}",
                                "copied_params": inflation.report.copied_params, "new_params": inflation.report.new_params}
    return UNetSpatioTemporalConditionModel.from_pretrained(parent), {"init": f"continued from {cfg.init_from}"}


class _Mlflow:
    """Per-step metrics to the MLflow run the orchestrator created (rank 0 only)."""

    def __init__(self, cfg: TrainConfig):
        self.active = bool(cfg.mlflow_tracking_uri and cfg.mlflow_run_id)
        if self.active:
            import mlflow

            self.client = mlflow.MlflowClient(cfg.mlflow_tracking_uri)
            self.run_id = cfg.mlflow_run_id
            self.pending: list = []

    def metric(self, key: str, value: float, step: int) -> None:
        if self.active:
            from mlflow.entities import Metric

            self.pending.append(Metric(key, float(value), int(time.time() * 1000), step))
            if len(self.pending) >= 50:
                self.flush()

    def flush(self) -> None:
        if self.active and self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []


def train(cfg: TrainConfig, accelerator, pipes=None) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from svd_dag.model_store import ModelStore
    from svd_dag.training import conditioning, edm
    from svd_dag.training.components import build_vae, encode_frames, load_text_encoder
    from svd_dag.training.data import ClipDataset, collate, read_manifest

    main = accelerator.is_main_process
    say = (pipes.log.info if pipes is not None else log.info) if main else (lambda *_: None)
    set_seed(cfg.seed)
    store = ModelStore(cfg.models_uri, os.path.join(cfg.state_dir, "model_cache")) if cfg.models_uri else None
    text = load_text_encoder(cfg.text_arch, store, cfg.seed)
    if cfg.init_from and os.path.exists(os.path.join(cfg.init_from, "vae", "config.json")):
        from diffusers import AutoencoderKLTemporalDecoder

        vae = AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(cfg.init_from, "vae")).eval().requires_grad_(False)
        vae_weights = json.load(open(os.path.join(cfg.init_from, "svd_dag_training.json")))["vae_weights"]
    else:
        vae, vae_weights, _ = build_vae(cfg.profile, store, cfg.seed)
    unet, init_info = _build_unet(cfg, vae.config.latent_channels, text.width, store)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay, model_cls=type(unet), model_config=unet.config)

    rows = read_manifest(cfg.manifest_uri, cfg.storage_options)
    dataset = ClipDataset(rows, cfg.num_frames, cfg.target_fps, cfg.height, cfg.width, cfg.raw_options, cfg.seed)
    if len(dataset) == 0:
        raise ValueError(f"{cfg.manifest_uri}: no clip has the {cfg.num_frames} frames this stage needs")
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=1e-2)
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps)
    unet, optimizer, loader, scheduler = accelerator.prepare(unet, optimizer, loader, scheduler)
    accelerator.register_for_checkpointing(ema)
    vae.to(accelerator.device)
    text.model.to(accelerator.device)

    step, resumed_from = 0, None
    found = latest_state(cfg.state_dir)
    if found:
        step, path = found
        accelerator.load_state(path)
        resumed_from = step
        say(f"resumed from {path} (step {step})")
    mlf = _Mlflow(cfg) if main else None
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step * 7919 + accelerator.process_index)
    losses: list[float] = []
    skipped = samples = 0
    started = time.time()
    batches = iter(loader)
    while step < cfg.steps:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        skipped += batch["skipped"]
        if not batch["size"]:
            continue
        pixels = batch["pixels"].to(accelerator.device)  # B, F, 3, H, W
        b, f = pixels.shape[:2]
        latents = encode_frames(vae, pixels.flatten(0, 1)).unflatten(0, (b, f))
        x0 = latents[:, 0] if cfg.stage == "image" else latents
        hidden = conditioning.drop_text_conditioning(text.encode(batch["caption"], accelerator.device),
                                                     p=cfg.text_dropout, generator=gen)
        sigmas = edm.sample_training_sigmas(b, cfg.p_mean, cfg.p_std, generator=gen).to(accelerator.device)
        noise = torch.randn(x0.shape, generator=gen).to(accelerator.device)
        kwargs: dict[str, Any] = {"encoder_hidden_states": hidden}
        if cfg.stage == "video":
            motion = [m if m is not None and not math.isnan(m) else 0.0 for m in batch["motion_score"]]
            buckets = conditioning.motion_bucket_id(torch.tensor(motion), saturation_score=cfg.motion_saturation)
            kwargs["added_time_ids"] = conditioning.added_time_ids(
                torch.tensor(batch["fps"]), buckets, cfg.cond_noise_strength).to(accelerator.device)

        def model_fn(x_in, c_noise):
            return unet(x_in, c_noise, **kwargs).sample

        with accelerator.accumulate(unet):
            _, loss = edm.edm_loss(model_fn, x0, sigmas, noise)
            accelerator.backward(loss)
            if step < cfg.time_embedding_only_steps:  # SVD stage I: first phase trains the time embedding only
                for name, p in accelerator.unwrap_model(unet).named_parameters():
                    if not name.startswith("time_embedding"):
                        p.grad = None
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(unet).parameters())
        step += 1
        samples += b * accelerator.num_processes
        value = accelerator.gather(loss.detach().reshape(1)).mean().item()
        losses.append(value)
        if main:
            mlf.metric("loss", value, step)
            mlf.metric("lr", scheduler.get_last_lr()[0], step)
        if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
            say(f"step {step}/{cfg.steps} loss {value:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            path = os.path.join(cfg.state_dir, f"{STATE_PREFIX}{step}")
            accelerator.save_state(path)
            accelerator.wait_for_everyone()
            if main:
                open(os.path.join(path, ".complete"), "w").close()
                _prune_states(cfg.state_dir)
    accelerator.wait_for_everyone()
    if mlf:
        mlf.flush()
    result: dict[str, Any] = {}
    if main:
        result = _save_final(cfg, accelerator.unwrap_model(unet), ema, vae, vae_weights, text, init_info)
        result.update(steps=step, resumed_from=resumed_from, skipped_clips=skipped, samples_seen=samples,
                      wall_time_s=round(time.time() - started, 2),
                      **loss_summary(losses))
    return result


def _save_final(cfg: TrainConfig, unet, ema, vae, vae_weights: str, text, init_info: dict) -> dict[str, Any]:
    import copy

    from svd_dag.storage import Store

    with tempfile.TemporaryDirectory(dir=cfg.state_dir) as tmp:
        unet.save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
        ema_unet = copy.deepcopy(unet)
        ema.copy_to(ema_unet.parameters())
        ema_unet.save_pretrained(os.path.join(tmp, "unet_ema"), safe_serialization=True)
        vae.save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
        digest = _weights_digest(tmp)
        meta = {"config": json.loads(cfg.to_json()), "vae_weights": vae_weights, "text_encoder": text.version,
                "text_weights": text.weights, "init": init_info, "weights_digest": digest}
        with open(os.path.join(tmp, "svd_dag_training.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
        root, rel = cfg.output_uri.rsplit("/", 1)
        uri = Store(root, cfg.storage_options).put_dir(tmp, rel)
    return {"checkpoint_uri": uri, "data_version": digest, "vae_weights": vae_weights, "text_weights": text.weights, **init_info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of a TrainConfig JSON file")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        cfg = TrainConfig.from_json(f.read())
    os.makedirs(cfg.state_dir, exist_ok=True)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    if accelerator.is_main_process:
        from dagster_pipes import open_dagster_pipes

        pipes_ctx = open_dagster_pipes()
    else:
        pipes_ctx = contextlib.nullcontext(None)
    with pipes_ctx as pipes:
        result = train(cfg, accelerator, pipes)
        if accelerator.is_main_process:
            log.info("result %s", json.dumps(result, default=str))
            if pipes is not None and pipes.is_asset_step:
                digest = result.pop("data_version")
                pipes.report_asset_materialization(metadata={k: v for k, v in result.items() if v is not None},
                                                   data_version=digest)
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
