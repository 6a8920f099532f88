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
    from svd_dag.storage import Store, tree_digest

    return tree_digest(Store(folder), folder, ".safetensors")[:16]


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
    if parent_class == "UNet2DConditionModel" and cfg.task != "text":
        raise ValueError(f"the {cfg.task} fine-tune starts from a video checkpoint, got an image UNet in {cfg.init_from}")
    if parent_class == "UNet2DConditionModel":
        image_unet = UNet2DConditionModel.from_pretrained(parent)
        add_dim = 256 if cfg.profile == "full" else unets.TINY_ADDITION_TIME_EMBED_DIM
        video_config = unets.video_unet_config_from_image(dict(image_unet.config), num_frames=cfg.num_frames,
                                                          addition_time_embed_dim=add_dim)
        inflation = unets.inflate_image_unet(image_unet, video_config)
        return inflation.unet, {"init": f"inflated from {cfg.init_from}",
                                "copied_params": inflation.report.copied_params, "new_params": inflation.report.new_params}
    unet = UNetSpatioTemporalConditionModel.from_pretrained(parent)
    info: dict[str, Any] = {"init": f"continued from {cfg.init_from}"}
    if cfg.task != "text":
        from svd_dag.training import finetune_models
        from svd_dag.training.conditioning_frames import extra_in_channels

        wanted = latent_channels + extra_in_channels(cfg.task, latent_channels)
        if unet.config.in_channels != wanted:
            info["widened_conv_in"] = f"{unet.config.in_channels} -> {wanted}"
            unet = finetune_models.widen_conv_in(unet, wanted)
        if cfg.task == "multiview":
            unet = finetune_models.add_vector_conditions(unet, 4)  # + camera elevation
    return unet, info


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


def _fetch_parent(cfg: TrainConfig) -> TrainConfig:
    """A remote (s3://) parent checkpoint is copied once into the state folder; training reads
    the local copy (every rank the same one), lineage keeps the remote URI."""
    import dataclasses

    from svd_dag.storage import local_folder

    if not cfg.init_from:
        return cfg
    cache = os.path.join(cfg.state_dir, "parent", hashlib.sha256(cfg.init_from.encode()).hexdigest()[:12])
    return dataclasses.replace(cfg, init_from=local_folder(cfg.init_from, cache, cfg.storage_options))


def train(cfg: TrainConfig, accelerator, pipes=None) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from svd_dag.model_store import ModelStore
    from svd_dag.training import conditioning, edm
    from svd_dag.training.components import build_vae, encode_frames, load_text_encoder
    from svd_dag.training.clip_usage import ClipUsage
    from svd_dag.training.data import collate

    main = accelerator.is_main_process
    say = (pipes.log.info if pipes is not None else log.info) if main else (lambda *_: None)
    parent_uri = cfg.init_from
    if main:
        cfg = _fetch_parent(cfg)
    accelerator.wait_for_everyone()
    cfg = _fetch_parent(cfg)  # the other ranks find rank 0's complete copy
    set_seed(cfg.seed)
    store = ModelStore(cfg.models_uri, os.path.join(cfg.state_dir, "model_cache")) if cfg.models_uri else None
    parent_meta = _parent_meta(cfg.init_from)
    if cfg.init_from and os.path.exists(os.path.join(cfg.init_from, "vae", "config.json")):
        from diffusers import AutoencoderKLTemporalDecoder

        vae = AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(cfg.init_from, "vae")).eval().requires_grad_(False)
        vae_weights = parent_meta["vae_weights"]
    else:
        vae, vae_weights, _ = build_vae(cfg.profile, store, cfg.seed)
    vae_fit: dict[str, Any] = {}
    if vae_weights == "random" and cfg.vae_fit_steps:
        vae_fit = _fit_vae(cfg, vae, accelerator)
        vae_weights = "tiny-fitted"
        say(f"fitted the tiny VAE: {vae_fit}")
    image_task = cfg.task != "text"
    text = None if image_task else load_text_encoder(cfg.text_arch, store, cfg.seed)
    cross_dim = text.width if text is not None else _parent_cross_attention_dim(cfg.init_from)
    unet, init_info = _build_unet(cfg, vae.config.latent_channels, cross_dim, store)
    if parent_uri and parent_uri != cfg.init_from:  # report the checkpoint, not its local copy
        init_info = {k: v.replace(cfg.init_from, parent_uri) if isinstance(v, str) else v for k, v in init_info.items()}
    encoder = _image_encoder(cfg, unet, store) if image_task else None
    lora = None
    if cfg.lora_rank:
        from svd_dag.training.finetune_models import add_temporal_lora

        lora = add_temporal_lora(unet, cfg.lora_rank)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    ema = EMAModel(trainable, decay=cfg.ema_max_decay, model_cls=type(unet), model_config=unet.config)

    dataset = _dataset(cfg)
    if len(dataset) == 0:
        raise ValueError(f"{cfg.orbits_uri or cfg.manifest_uri}: no item has the {cfg.num_frames} frames this stage needs")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(cfg.seed),
        num_workers=cfg.dataloader_workers, persistent_workers=cfg.dataloader_workers > 0,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(), worker_init_fn=_seed_worker)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=1e-2)
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps)
    unet, optimizer, loader, scheduler = accelerator.prepare(unet, optimizer, loader, scheduler)
    accelerator.register_for_checkpointing(ema)
    ema.to(accelerator.device)  # the shadow weights live where the trained ones do (prepare moved those)
    vae.to(accelerator.device)
    for frozen in (text, encoder):
        if frozen is not None:
            frozen.model.to(accelerator.device)

    step, resumed_from = 0, None
    usage = ClipUsage()
    found = latest_state(cfg.state_dir)
    if found:
        step, path = found
        accelerator.load_state(path)
        ema.to(accelerator.device)
        usage = ClipUsage.load(os.path.join(path, f"usage-{accelerator.process_index}"))
        resumed_from = step
        say(f"resumed from {path} (step {step})")
    mlf = _Mlflow(cfg) if main else None
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step * 7919 + accelerator.process_index)
    losses: list[float] = []
    micro_losses: list[torch.Tensor] = []
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
        usage.add_batch(batch)
        if not batch["size"]:
            continue
        pixels = batch["pixels"].to(accelerator.device)  # B, F, 3, H, W
        b, f = pixels.shape[:2]
        latents = encode_frames(vae, pixels.flatten(0, 1)).unflatten(0, (b, f))
        x0 = latents[:, 0] if cfg.stage == "image" else latents
        sigmas = edm.sample_training_sigmas(b, cfg.p_mean, cfg.p_std, generator=gen).to(accelerator.device)
        noise = torch.randn(x0.shape, generator=gen).to(accelerator.device)
        kwargs: dict[str, Any] = {}
        concat = None
        if image_task:
            cond = _image_conditioning(cfg, vae, encoder, pixels, gen)
            kwargs["encoder_hidden_states"], concat = cond.hidden, cond.concat
            strength = cond.strength
        else:
            kwargs["encoder_hidden_states"] = conditioning.drop_text_conditioning(
                text.encode(batch["caption"], accelerator.device), p=cfg.text_dropout, generator=gen)
            strength = torch.full((b,), cfg.cond_noise_strength)
        if cfg.stage == "video":
            kwargs["added_time_ids"] = _added_time_ids(cfg, batch, strength).to(accelerator.device)

        def model_fn(x_in, c_noise):
            if concat is not None:
                x_in = torch.cat([x_in, concat.to(x_in.dtype)], dim=2)
            return unet(x_in, c_noise, **kwargs).sample

        with accelerator.accumulate(unet):
            _, loss = edm.edm_loss(model_fn, x0, sigmas, noise)
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
        samples += b * accelerator.num_processes
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
            path = os.path.join(cfg.state_dir, f"{STATE_PREFIX}{step}")
            accelerator.save_state(path)
            os.makedirs(os.path.join(path, f"usage-{accelerator.process_index}"), exist_ok=True)
            usage.save(os.path.join(path, f"usage-{accelerator.process_index}"))
            accelerator.wait_for_everyone()
            if main:
                open(os.path.join(path, ".complete"), "w").close()
                _prune_states(cfg.state_dir)
    accelerator.wait_for_everyone()
    from accelerate.utils import gather_object

    usage_states = gather_object([usage.state()])  # every process's draws: rank 0 writes them all
    if mlf:
        mlf.flush()
    result: dict[str, Any] = {}
    if main:
        frozen_info = {**vae_fit, **({"image_encoder": encoder.version, "image_encoder_weights": encoder.weights} if encoder is not None
                       else {"text_encoder": text.version, "text_weights": text.weights})}
        result = _save_final(cfg, accelerator.unwrap_model(unet), ema, trainable, vae, vae_weights, encoder, lora,
                             {**init_info, **frozen_info}, parent_meta, dataset, say,
                             ClipUsage().merge(usage_states))
        result.update(steps=step, resumed_from=resumed_from, skipped_clips=skipped, samples_seen=samples,
                      micro_batch=cfg.batch_size, processes=accelerator.num_processes,
                      gradient_accumulation=cfg.gradient_accumulation,
                      global_batch=cfg.batch_size * accelerator.num_processes * cfg.gradient_accumulation,
                      wall_time_s=round(time.time() - started, 2),
                      **loss_summary(losses))
    return result


def _save_final(cfg: TrainConfig, unet, ema, trainable, vae, vae_weights: str, encoder, lora, info: dict,
                parent_meta: dict, dataset, say, usage) -> dict[str, Any]:
    """Write the final weights to `cfg.output_uri`.

    Text stages: unet/ (raw), unet_ema/, vae/. Image fine-tunes: a diffusers pipeline layout with
    unet/ = EMA weights (what a user samples with), unet_raw/, vae/, image_encoder/,
    feature_extractor/, scheduler/; the I2V one also gets model_index.json so that
    `StableVideoDiffusionPipeline.from_pretrained` loads it. Camera LoRAs: the adapter only.
    Every layout also holds `clips_used.parquet` (what it trained on) and, in
    `svd_dag_training.json`, the code that trained it.
    """
    import copy

    from svd_dag.lineage.code_record import code_record
    from svd_dag.storage import Store
    from svd_dag.training import clip_usage

    with tempfile.TemporaryDirectory(dir=cfg.state_dir) as tmp:
        layout: dict[str, Any] = {}
        if lora is not None:
            from svd_dag.training.finetune_models import save_temporal_lora

            save_temporal_lora(unet, lora, os.path.join(tmp, "adapter"))
            layout = {"adapter": "adapter", "base_checkpoint": info["init"].removeprefix("continued from ")}
        else:
            ema_unet = copy.deepcopy(unet)
            ema.copy_to([p for p in ema_unet.parameters() if p.requires_grad])
            if encoder is None:
                unet.save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
                ema_unet.save_pretrained(os.path.join(tmp, "unet_ema"), safe_serialization=True)
                vae.save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
                layout = {"raw": "unet", "ema": "unet_ema"}
            else:
                layout = _save_image_model(cfg, tmp, unet, ema_unet, vae, encoder)
        digest = _weights_digest(tmp)
        used = clip_usage.usage_rows(getattr(dataset, "all_rows", None) or _item_rows(dataset), usage,
                                     dataset.excluded)
        clip_usage.write_usage(tmp, used)
        code = code_record()
        meta = {"config": json.loads(cfg.to_json()), "vae_weights": vae_weights, "init": info, "layout": layout,
                "weights_digest": digest, "task": cfg.task, "parent": parent_meta.get("weights_digest"),
                "code": code, "clips": clip_usage.summary(used)}
        with open(os.path.join(tmp, "svd_dag_training.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
        renders = cfg.sample_count and (encoder is not None or (cfg.stage == "video" and not lora))
        rendered = _render_samples(cfg, tmp, dataset, say) if renders else []
        root, rel = cfg.output_uri.rsplit("/", 1)
        uri = _publish_once(Store(root, cfg.storage_options), tmp, rel, digest)
    out = {"checkpoint_uri": uri, "data_version": digest, "vae_weights": vae_weights, "task": cfg.task, **info,
           "code": json.dumps(code, sort_keys=True), "clips_used_uri": f"{uri}/{clip_usage.FILE}",
           **clip_usage.summary(used)}
    if rendered:
        out.update(samples_index=f"{uri}/samples/samples.json", sample_videos=len(rendered),
                   sample_seconds_per_video=round(sum(r.seconds for r in rendered) / len(rendered), 3))
    return out


def _publish_once(store, folder: str, rel: str, digest: str) -> str:
    """Copy the finished checkpoint folder to storage. A folder is written once: when the same
    key already holds these weights (a re-materialization that resumed a finished run) it is
    kept as it is; other weights under the key are an error, never an overwrite."""
    from svd_dag.storage import ImmutableArtefactError

    meta_uri = f"{store.uri(rel)}/svd_dag_training.json"
    if not store.exists(meta_uri):
        return store.put_dir(folder, rel)
    existing = json.loads(store.read_bytes(meta_uri)).get("weights_digest")
    if existing != digest:
        raise ImmutableArtefactError(f"{store.uri(rel)} already holds weights {existing}, not {digest}: a checkpoint "
                                     "folder is written once; its key should have changed with what trained it")
    return store.uri(rel)


def _render_samples(cfg: TrainConfig, folder: str, dataset, say) -> list:
    """Fixed inputs x seeds through the just-saved weights (EMA UNet; LoRA: base + adapter)."""
    from svd_dag.sampling.euler import Guidance
    from svd_dag.sampling.generate import load_video_model
    from svd_dag.sampling.samples import SampleInput, render_samples

    if cfg.lora_rank:
        model = load_video_model(cfg.init_from, adapter=os.path.join(folder, "adapter"))
    else:
        model = load_video_model(folder)
    if cfg.sample_manifest_uri:  # a fixed probe set shared by several models (the filter ablation)
        import dataclasses

        dataset = _dataset(dataclasses.replace(cfg, manifest_uri=cfg.sample_manifest_uri))
    inputs = []
    for i in range(len(dataset)):
        if len(inputs) == cfg.sample_count:
            break
        ref = dataset.reference(i)
        if ref is not None:
            inputs.append(SampleInput(*ref))
    if cfg.sample_guidance:
        guidance = Guidance(*cfg.sample_guidance)
    else:
        guidance = Guidance.svd14() if cfg.num_frames <= 14 else Guidance.svd25()
    rendered = render_samples(model, inputs, folder, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                              steps=cfg.sample_steps, guidance=guidance, seeds=list(cfg.sample_seeds))
    say(f"rendered {len(rendered)} sample videos ({cfg.sample_steps} steps, guidance {guidance.min_scale}->{guidance.max_scale})")
    return rendered


def _save_image_model(cfg: TrainConfig, folder: str, unet, ema_unet, vae, encoder) -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    from svd_dag.sampling.euler import SVD_SCHEDULER_CONFIG

    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    encoder.model.config.svd_dag_weights = encoder.weights
    if cfg.task == "i2v":
        pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder.model, unet=ema_unet, scheduler=scheduler,
                                            feature_extractor=encoder.processor)
        pipe.save_pretrained(folder, safe_serialization=True)
    else:  # same layout, no model_index.json: diffusers' SVD pipeline cannot drive these inputs
        ema_unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
        vae.save_pretrained(os.path.join(folder, "vae"), safe_serialization=True)
        encoder.model.save_pretrained(os.path.join(folder, "image_encoder"), safe_serialization=True)
        encoder.processor.save_pretrained(os.path.join(folder, "feature_extractor"))
        scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    unet.save_pretrained(os.path.join(folder, "unet_raw"), safe_serialization=True)
    return {"ema": "unet", "raw": "unet_raw", "diffusers_pipeline": cfg.task == "i2v"}


VAE_FIT_FRAMES = 4  # frames per clip the tiny VAE's temporal decoder learns to decode together


def _fit_vae(cfg: TrainConfig, vae, accelerator) -> dict[str, Any]:
    """Fit the tiny VAE on up to 16 clips of the stage's data; every rank fits the same way and
    rank 0's weights are broadcast so all processes share one latent space."""
    import dataclasses

    from accelerate.utils import broadcast

    from svd_dag.training.components import fit_tiny_vae

    dataset = _dataset(dataclasses.replace(cfg, num_frames=VAE_FIT_FRAMES))
    clips = [item["pixels"] for item in (dataset[i] for i in range(min(len(dataset), 16))) if "skip" not in item]
    if not clips:
        raise ValueError(f"{cfg.manifest_uri}: no clip of {VAE_FIT_FRAMES} frames decodes, cannot fit the tiny VAE")
    report = fit_tiny_vae(vae, torch.stack(clips), steps=cfg.vae_fit_steps, seed=cfg.seed)
    if accelerator.num_processes > 1:
        for p in vae.parameters():
            p.data = broadcast(p.data, from_process=0)
        scale = broadcast(torch.tensor([vae.config.scaling_factor]), from_process=0)
        vae.register_to_config(scaling_factor=float(scale))
    return report


def _parent_meta(init_from: str | None) -> dict[str, Any]:
    path = os.path.join(init_from, "svd_dag_training.json") if init_from else None
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _parent_cross_attention_dim(init_from: str | None) -> int:
    if not init_from:
        raise ValueError("an image-conditioned fine-tune starts from a video checkpoint: init_from is required")
    with open(os.path.join(init_from, "unet", "config.json")) as f:
        return int(json.load(f)["cross_attention_dim"])


def _image_encoder(cfg: TrainConfig, unet, store):
    """The parent's image encoder when it has one (I2V -> interpolation / multi-view / LoRA keep
    the I2V model's), otherwise the configured one, projecting to the UNet's token width."""
    from svd_dag.training.conditioning_frames import load_image_encoder

    saved = os.path.join(cfg.init_from, "image_encoder") if cfg.init_from else None
    folder = saved if saved and os.path.exists(os.path.join(saved, "config.json")) else None
    encoder = load_image_encoder(cfg.image_encoder, unet.config.cross_attention_dim, store, cfg.seed, folder=folder)
    if encoder.model.config.projection_dim != unet.config.cross_attention_dim:
        raise ValueError(f"image encoder projects to {encoder.model.config.projection_dim} but the UNet attends to "
                         f"{unet.config.cross_attention_dim}-d tokens")
    return encoder


def _seed_worker(worker_id: int) -> None:
    """Each DataLoader worker draws its own clip offsets (a copy of the dataset's generator would
    repeat the others')."""
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "rng"):
        info.dataset.rng.seed(info.seed)


def _item_rows(dataset) -> list[dict[str, Any]]:
    """The items a dataset without manifest rows (orbits) may draw, as usage rows."""
    return [{"clip_id": os.path.basename(u.rstrip("/"))} for u in getattr(dataset, "objects", [])]


def _dataset(cfg: TrainConfig):
    from svd_dag.training.data import ClipDataset, OrbitDataset, read_manifest

    if cfg.task == "multiview":
        return OrbitDataset(cfg.orbits_uri, cfg.num_frames, cfg.height, cfg.width, cfg.storage_options,
                            exclude=cfg.orbits_exclude)
    rows = read_manifest(cfg.manifest_uri, cfg.storage_options)
    return ClipDataset(rows, cfg.num_frames, cfg.target_fps, cfg.height, cfg.width, cfg.raw_options, cfg.seed,
                       shard_options=cfg.storage_options)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of a TrainConfig JSON file")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        cfg = TrainConfig.from_json(f.read())
    os.makedirs(cfg.state_dir, exist_ok=True)
    accelerator = training_accelerator(cfg, cpu=not torch.cuda.is_available())
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
