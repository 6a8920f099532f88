"""One training entry point for every stage, run as `accelerate launch -m svd_dag.training.train`.

    accelerate launch ... -m svd_dag.training.train --config run.json   (or s3://.../run.json)

Loop: decode clips by reference or from shards -> VAE latents -> EDM v-form loss with one
sigma per video -> AdamW with warmup, gradient clipping, EMA; one optimizer step per
`gradient_accumulation` micro-batches. Resumable state (`resume_state`) every
`checkpoint_every` steps under the storage root; a restart on any machine resumes from the
newest complete state and skips the batches it had trained on. Models are built in
`model_init`, final weights and samples written by `export` (rank 0). Only rank 0 opens the
Dagster Pipes channel and talks to MLflow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from typing import Any, Iterator

import torch

from svd_dag.training.config import TrainConfig

log = logging.getLogger("svd_dag.train")


def loss_summary(losses: list[float]) -> dict[str, float | None]:
    """Mean loss over the first and the last tenth of the steps (at least 5): per-step values
    are noisy because every step draws new noise levels."""
    if not losses:
        return {"first_loss": None, "final_loss": None}
    window = max(5, len(losses) // 10)
    return {"first_loss": sum(losses[:window]) / len(losses[:window]),
            "final_loss": sum(losses[-window:]) / len(losses[-window:])}


class _Mlflow:
    """Per-step metrics to the MLflow run the orchestrator created (rank 0 only)."""

    def __init__(self, cfg: TrainConfig):
        # The orchestrator passes the tracking URI by the environment (it may carry credentials,
        # which the run config written to storage must not).
        uri = cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.active = bool(uri and cfg.mlflow_run_id)
        if self.active:
            import mlflow

            self.client = mlflow.MlflowClient(uri)
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
    from accelerate.utils import gather_object, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from svd_dag.training.clip_usage import ClipUsage
    from svd_dag.training.data import EpochShuffle, collate, dataset_for
    from svd_dag.training.export import save_final
    from svd_dag.training.model_init import build_models, fetch_parent, frozen_dtype, place_frozen, restore_fp32
    from svd_dag.training.resume_state import Progress

    main = accelerator.is_main_process
    say = (pipes.log.info if pipes is not None else log.info) if main else (lambda *_: None)
    parent_uri = cfg.init_from
    if accelerator.is_local_main_process:  # one copy of a remote parent per machine
        cfg = fetch_parent(cfg)
    accelerator.wait_for_everyone()
    cfg = fetch_parent(cfg)
    set_seed(cfg.seed)
    models = build_models(cfg, accelerator, say, parent_uri)
    unet = models.unet
    trainable = [p for p in unet.parameters() if p.requires_grad]
    ema = EMAModel(trainable, decay=cfg.ema_max_decay, model_cls=type(unet), model_config=unet.config,
                   foreach=True)  # one fused update over all tensors, not a Python loop per tensor

    dataset = dataset_for(cfg)
    if len(dataset) == 0:
        raise ValueError(f"{cfg.orbits_uri or cfg.manifest_uri}: no item has the {cfg.num_frames} frames this stage needs")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=EpochShuffle(len(dataset), cfg.seed), collate_fn=collate,
        num_workers=cfg.dataloader_workers, persistent_workers=cfg.dataloader_workers > 0,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(), worker_init_fn=_seed_worker)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=1e-2,
                                  fused=accelerator.device.type == "cuda")
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps)
    unet, optimizer, loader, scheduler = accelerator.prepare(unet, optimizer, loader, scheduler)
    accelerator.register_for_checkpointing(ema)
    ema.to(accelerator.device)  # the shadow weights live where the trained ones do (prepare moved those)
    place_frozen(models, accelerator.device, frozen_dtype(accelerator.mixed_precision), keep_fp32=main)

    states = _states(cfg, accelerator)
    progress, usage, resumed_from = Progress(0, 0, 0), ClipUsage(), None
    found = states.latest()
    if found:
        path = _fetch_state(states, found.step, accelerator)
        accelerator.load_state(path)
        ema.to(accelerator.device)
        usage = ClipUsage.load(os.path.join(path, f"usage-{accelerator.process_index}"))
        progress, resumed_from = found, found.step
        say(f"resumed from {states.uri} step {found.step} ({found.micro_batches} micro-batches already trained on)")
    mlf = _Mlflow(cfg) if main else None
    step, drawn, samples = progress.step, progress.micro_batches, progress.samples
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step * 7919 + accelerator.process_index)
    losses: list[float] = []
    micro_losses: list[torch.Tensor] = []
    skipped = 0
    started = time.time()
    batches = _micro_batches(accelerator, loader, drawn)
    while step < cfg.steps:
        batch = next(batches)
        drawn += 1
        skipped += batch["skipped"]
        usage.add_batch(batch)
        if not batch["size"]:
            continue
        with accelerator.accumulate(unet):
            loss = _micro_batch_loss(cfg, models, unet, batch, gen, accelerator.device)
            accelerator.backward(loss)
            if step < cfg.time_embedding_only_steps:  # SVD stage I: first phase trains the time embedding only
                for name, p in accelerator.unwrap_model(unet).named_parameters():
                    if not name.startswith("time_embedding"):
                        p.grad = None
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        samples += batch["size"] * accelerator.num_processes
        micro_losses.append(loss.detach())
        if not accelerator.sync_gradients:
            continue  # gradient accumulation: one optimizer step per `gradient_accumulation` micro-batches
        ema.step(trainable)
        step += 1
        value = accelerator.gather(torch.stack(micro_losses).mean().reshape(1)).mean().item()
        micro_losses = []
        losses.append(value)
        if main:
            mlf.metric("loss", value, step)
            mlf.metric("lr", scheduler.get_last_lr()[0], step)
        if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
            say(f"step {step}/{cfg.steps} loss {value:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save_state(states, Progress(step, drawn, samples), usage, accelerator)
    accelerator.wait_for_everyone()
    usage_states = gather_object([usage.state()])  # every process's draws: rank 0 writes them all
    if mlf:
        mlf.flush()
    result: dict[str, Any] = {}
    if main:
        restore_fp32(models)
        result = save_final(cfg, accelerator.unwrap_model(unet), ema, trainable, models.vae, models.vae_weights,
                            models.encoder, models.lora, models.info, models.parent_meta, dataset, say,
                            ClipUsage().merge(usage_states))
        result.update(steps=step, resumed_from=resumed_from, skipped_clips=skipped, samples_seen=samples,
                      micro_batch=cfg.batch_size, processes=accelerator.num_processes,
                      gradient_accumulation=cfg.gradient_accumulation,
                      global_batch=cfg.batch_size * accelerator.num_processes * cfg.gradient_accumulation,
                      frozen_dtype=str(frozen_dtype(accelerator.mixed_precision)).removeprefix("torch."),
                      state_uri=states.uri, wall_time_s=round(time.time() - started, 2), **loss_summary(losses))
    return result


def _micro_batch_loss(cfg: TrainConfig, models, unet, batch: dict, gen: torch.Generator, device) -> torch.Tensor:
    """The EDM loss of one micro-batch. Frozen models run in their (training) dtype; what they
    hand the UNet is cast to fp32, where the loss is computed."""
    from svd_dag.training import conditioning, edm
    from svd_dag.training.components import encode_frames

    pixels = batch["pixels"].to(device, non_blocking=True)  # B, F, 3, H, W
    b, f = pixels.shape[:2]
    latents = encode_frames(models.vae, pixels.flatten(0, 1)).unflatten(0, (b, f)).float()
    x0 = latents[:, 0] if cfg.stage == "image" else latents
    sigmas = edm.sample_training_sigmas(b, cfg.p_mean, cfg.p_std, generator=gen).to(device)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    kwargs: dict[str, Any] = {}
    concat = None
    if models.encoder is not None:
        cond = _image_conditioning(cfg, models.vae, models.encoder, pixels, gen)
        kwargs["encoder_hidden_states"], concat = cond.hidden.float(), cond.concat.float()
        strength = cond.strength
    else:
        kwargs["encoder_hidden_states"] = conditioning.drop_text_conditioning(
            models.text.encode(batch["caption"], device).float(), p=cfg.text_dropout, generator=gen)
        strength = torch.full((b,), cfg.cond_noise_strength)
    if cfg.stage == "video":
        kwargs["added_time_ids"] = _added_time_ids(cfg, batch, strength).to(device)

    def model_fn(x_in, c_noise):
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(x_in.dtype)], dim=2)
        return unet(x_in, c_noise, **kwargs).sample

    _, loss = edm.edm_loss(model_fn, x0, sigmas, noise)
    return loss


def _micro_batches(accelerator, loader, drawn: int) -> Iterator[dict]:
    """The loader's batches without end, epoch after epoch, starting after the first `drawn`
    (a resumed run replays the order of the epoch it stopped in and skips what it trained on)."""
    epoch, offset = divmod(drawn, len(loader))
    while True:
        loader.set_epoch(epoch)
        yield from accelerator.skip_first_batches(loader, offset) if offset else loader
        epoch, offset = epoch + 1, 0


def _states(cfg: TrainConfig, accelerator):
    from svd_dag.training.resume_state import ResumableState

    machine = accelerator.process_index - accelerator.local_process_index  # first rank of this machine
    return ResumableState(cfg.state_uri or os.path.join(cfg.state_dir, "states"),
                          os.path.join(cfg.state_dir, f"machine-{machine}"), accelerator.process_index,
                          cfg.storage_options)


def _fetch_state(states, step: int, accelerator) -> str:
    """Every rank reads the same state; a remote one is downloaded once per machine."""
    if accelerator.is_local_main_process:
        states.fetch(step)
    accelerator.wait_for_everyone()
    return states.fetch(step)


def _save_state(states, progress, usage, accelerator) -> None:
    """Every rank saves and uploads its part; the state counts once rank 0 marks it complete."""
    path = states.save_dir(progress.step)
    accelerator.save_state(path)
    usage.save(os.path.join(path, f"usage-{accelerator.process_index}"))
    states.upload_own(progress.step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        states.mark_complete(progress)
    if accelerator.is_local_main_process:
        states.discard_local(progress.step)
    accelerator.wait_for_everyone()


def _seed_worker(worker_id: int) -> None:
    """Each DataLoader worker draws its own clip offsets (a copy of the dataset's generator would
    repeat the others')."""
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "rng"):
        info.dataset.rng.seed(info.seed)


def _image_conditioning(cfg: TrainConfig, vae, encoder, pixels: torch.Tensor, gen: torch.Generator):
    from svd_dag.training.conditioning_frames import (build_image_conditioning, condition_sigmas,
                                                      conditioning_frames_of)

    b = pixels.shape[0]
    strength = condition_sigmas(b, cfg.cond_p_mean, cfg.cond_p_std, gen)
    drop_image = torch.rand(b, generator=gen) < cfg.image_dropout
    drop_latent = torch.rand(b, generator=gen) < cfg.latent_dropout
    return build_image_conditioning(cfg.task, vae, encoder, conditioning_frames_of(cfg.task, pixels), cfg.num_frames,
                                    strength, generator=gen, drop_image=drop_image, drop_latent=drop_latent)


def _added_time_ids(cfg: TrainConfig, batch: dict, strength: torch.Tensor) -> torch.Tensor:
    from svd_dag.training import conditioning

    motion = [m if m is not None and not math.isnan(m) else 0.0 for m in batch["motion_score"]]
    buckets = conditioning.motion_bucket_id(torch.tensor(motion), saturation_score=cfg.motion_saturation)
    ids = conditioning.added_time_ids(torch.tensor(batch["fps"]), buckets, strength)
    if cfg.task == "multiview":
        ids = torch.cat([ids, torch.tensor(batch["elevation_deg"], dtype=ids.dtype).view(-1, 1)], dim=1)
    return ids


def training_accelerator(cfg: TrainConfig, cpu: bool):
    """The Accelerator of a run: its mixed precision, and gradient accumulation counted across
    epochs (accelerate would otherwise step at every epoch's end with fewer micro-batches, and
    the global batch would not be the configured one)."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    plugin = GradientAccumulationPlugin(num_steps=cfg.gradient_accumulation, sync_with_dataloader=False)
    return Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision, gradient_accumulation_plugin=plugin)


def _launched_by_dagster() -> bool:
    return any(k.startswith("DAGSTER_PIPES_") for k in os.environ)


def _read_config(uri: str) -> str:
    """A run's TrainConfig JSON from a local path or a URI under the storage root (s3://)."""
    if "://" not in uri:
        with open(uri) as f:
            return f.read()
    from svd_dag.storage import Store

    root, name = uri.rsplit("/", 1)
    return Store(root).read_bytes(name).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="TrainConfig JSON: a local path or s3:// URI")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_json(_read_config(args.config))
    os.makedirs(cfg.state_dir, exist_ok=True)
    accelerator = training_accelerator(cfg, cpu=not torch.cuda.is_available())
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    if accelerator.is_main_process and _launched_by_dagster():
        from dagster_pipes import open_dagster_pipes

        pipes_ctx = open_dagster_pipes()
    else:  # another rank, or a launch by hand: log to stderr (a Pipes context outside Dagster drops it)
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
