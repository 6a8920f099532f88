"""Model initialisation for a training run: the UNet (random, SD 2.1, inflated or continued),
the frozen VAE and encoders in the training dtype, and the parent checkpoint's records.

Every rank builds the same models; a remote parent is copied to local disk once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from svd_dag.training.config import TrainConfig

VAE_FIT_FRAMES = 4  # frames per clip the tiny VAE's temporal decoder learns to decode together


def build_unet(cfg: TrainConfig, latent_channels: int, text_width: int, store=None):
    from diffusers import UNet2DConditionModel, UNetSpatioTemporalConditionModel

    parent = os.path.join(cfg.init_from, "unet") if cfg.init_from else None
    parent_class = json.load(open(os.path.join(parent, "config.json")))["_class_name"] if parent else None
    if cfg.stage == "image":
        if parent:
            return UNet2DConditionModel.from_pretrained(parent), {"init": f"continued from {cfg.init_from}"}
        return base_image_unet(cfg, latent_channels, text_width, store)
    if parent is None and cfg.inflate_base_image:
        image_unet, base = base_image_unet(cfg, latent_channels, text_width, store)
        return _inflate(cfg, image_unet, base["init"])
    if parent is None:
        raise ValueError("a video stage starts from a checkpoint: init_from is required")
    if parent_class == "UNet2DConditionModel" and cfg.task != "text":
        raise ValueError(f"the {cfg.task} fine-tune starts from a video checkpoint, got an image UNet in {cfg.init_from}")
    if parent_class == "UNet2DConditionModel":
        return _inflate(cfg, UNet2DConditionModel.from_pretrained(parent), cfg.init_from)
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


def base_image_unet(cfg: TrainConfig, latent_channels: int, text_width: int, store):
    """What stage I starts from: SD 2.1's UNet from the model store (full profile), or a seeded
    random tiny image UNet."""
    from diffusers import UNet2DConditionModel

    from svd_dag.training import unets

    if cfg.profile == "full":
        sd21 = store.find("sd21/unet/config.json") if store is not None else None
        if sd21 is None:
            raise FileNotFoundError("the full profile's image model starts from SD 2.1's UNet: put its diffusers "
                                    "folder at <model store>/sd21/unet/ (config.json + safetensors)")
        return UNet2DConditionModel.from_pretrained(os.path.dirname(sd21)), {"init": "SD 2.1 UNet (model store)"}
    config = unets.tiny_image_unet_config(latent_channels=latent_channels, cross_attention_dim=text_width,
                                          sample_size=cfg.height // 4)
    return unets.build_image_unet(config), {"init": "random (tiny profile)"}


def _inflate(cfg: TrainConfig, image_unet, source: str):
    """The image UNet with temporal layers inserted (spatial weights copied, temporal ones new)."""
    from svd_dag.training import unets

    add_dim = 256 if cfg.profile == "full" else unets.TINY_ADDITION_TIME_EMBED_DIM
    video_config = unets.video_unet_config_from_image(dict(image_unet.config), num_frames=cfg.num_frames,
                                                      addition_time_embed_dim=add_dim)
    inflation = unets.inflate_image_unet(image_unet, video_config)
    return inflation.unet, {"init": f"inflated from {source}",
                            "copied_params": inflation.report.copied_params, "new_params": inflation.report.new_params}


def fetch_parent(cfg: TrainConfig) -> TrainConfig:
    """A remote (s3://) parent checkpoint is copied once into the state folder; training reads
    the local copy (every rank the same one), lineage keeps the remote URI."""
    import dataclasses

    from svd_dag.storage import local_folder

    if not cfg.init_from:
        return cfg
    cache = os.path.join(cfg.state_dir, "parent", hashlib.sha256(cfg.init_from.encode()).hexdigest()[:12])
    return dataclasses.replace(cfg, init_from=local_folder(cfg.init_from, cache, cfg.storage_options))


def fit_vae(cfg: TrainConfig, vae, accelerator) -> dict[str, Any]:
    """Fit the tiny VAE on up to 16 clips of the stage's data; every rank fits the same way and
    rank 0's weights are broadcast so all processes share one latent space."""
    import dataclasses

    from accelerate.utils import broadcast

    from svd_dag.training.components import fit_tiny_vae
    from svd_dag.training.data import dataset_for

    dataset = dataset_for(dataclasses.replace(cfg, num_frames=VAE_FIT_FRAMES))
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


def parent_meta(init_from: str | None) -> dict[str, Any]:
    path = os.path.join(init_from, "svd_dag_training.json") if init_from else None
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def parent_cross_attention_dim(init_from: str | None) -> int:
    if not init_from:
        raise ValueError("an image-conditioned fine-tune starts from a video checkpoint: init_from is required")
    with open(os.path.join(init_from, "unet", "config.json")) as f:
        return int(json.load(f)["cross_attention_dim"])


def image_encoder(cfg: TrainConfig, unet, store):
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


def frozen_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype the frozen models (VAE, text and image encoders) run in: the training's
    mixed-precision dtype, as in diffusers' training scripts (fp32 copies of models that get
    no gradient would only cost memory and bandwidth). The trained UNet keeps fp32 master
    weights; autocast runs its forward in the mixed dtype."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def place_frozen(models: "Models", device, dtype: torch.dtype, keep_fp32: bool) -> None:
    """Move the frozen models to the training device and dtype. With `keep_fp32` (the rank that
    exports) their fp32 weights are kept on the CPU first: the checkpoint stores the VAE and
    image encoder as they came, not rounded to the training dtype."""
    if keep_fp32 and dtype != torch.float32:
        models.fp32_weights = [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
                               if m is not None else None for m in models.exported_frozen]
    for model in models.frozen:
        if model is not None:
            model.to(device=device, dtype=dtype)


def restore_fp32(models: "Models") -> None:
    """Put the frozen models back in fp32 (from the copies `place_frozen` kept) for export."""
    for model, weights in zip(models.exported_frozen, models.fp32_weights or []):
        if model is not None:
            model.to(device="cpu", dtype=torch.float32)
            model.load_state_dict(weights)


@dataclass
class Models:
    """Everything a run trains or conditions with, and how each was initialised."""

    unet: Any
    vae: Any
    vae_weights: str  # "random" | "tiny-fitted" | "pretrained" | the parent's
    text: Any  # TextEncoder (text stages) or None
    encoder: Any  # ImageEncoder (image-conditioned fine-tunes) or None
    lora: Any
    parent_meta: dict[str, Any]
    info: dict[str, Any]  # init report (+ VAE fit, encoder versions): into the checkpoint's metadata
    fp32_weights: list | None = None  # frozen models' weights before a cast to the training dtype

    @property
    def frozen(self) -> list:
        return [self.vae, self.text.model if self.text else None, self.encoder.model if self.encoder else None]

    @property
    def exported_frozen(self) -> list:
        """The frozen models the checkpoint stores (the text encoder is the model store's)."""
        return [self.vae, self.encoder.model if self.encoder else None]


def build_models(cfg: TrainConfig, accelerator, say, parent_uri: str | None) -> Models:
    """Every rank builds the same models (seeded). `cfg.init_from` is the parent's local copy;
    `parent_uri` is what lineage reports."""
    from svd_dag.model_store import ModelStore
    from svd_dag.training.components import build_vae, load_text_encoder

    store = ModelStore(cfg.models_uri, os.path.join(cfg.state_dir, "model_cache")) if cfg.models_uri else None
    meta = parent_meta(cfg.init_from)
    if cfg.init_from and os.path.exists(os.path.join(cfg.init_from, "vae", "config.json")):
        from diffusers import AutoencoderKLTemporalDecoder

        vae = AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(cfg.init_from, "vae")).eval().requires_grad_(False)
        vae_weights = meta["vae_weights"]
    else:
        vae, vae_weights, _ = build_vae(cfg.profile, store, cfg.seed)
    info: dict[str, Any] = {}
    if vae_weights == "random" and cfg.vae_fit_steps:
        info = fit_vae(cfg, vae, accelerator)
        vae_weights = "tiny-fitted"
        say(f"fitted the tiny VAE: {info}")
    text = None if cfg.task != "text" else load_text_encoder(cfg.text_arch, store, cfg.seed)
    cross_dim = text.width if text is not None else parent_cross_attention_dim(cfg.init_from)
    unet, init_info = build_unet(cfg, vae.config.latent_channels, cross_dim, store)
    if parent_uri and parent_uri != cfg.init_from:  # report the checkpoint, not its local copy
        init_info = {k: v.replace(cfg.init_from, parent_uri) if isinstance(v, str) else v for k, v in init_info.items()}
    encoder = image_encoder(cfg, unet, store) if text is None else None
    lora = None
    if cfg.lora_rank:
        from svd_dag.training.finetune_models import add_temporal_lora

        lora = add_temporal_lora(unet, cfg.lora_rank)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    info.update({"image_encoder": encoder.version, "image_encoder_weights": encoder.weights} if encoder is not None
                else {"text_encoder": text.version, "text_weights": text.weights})
    return Models(unet=unet, vae=vae, vae_weights=vae_weights, text=text, encoder=encoder, lora=lora,
                  parent_meta=meta, info={**init_info, **info})
