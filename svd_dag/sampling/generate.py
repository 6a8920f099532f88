"""Video generation with our checkpoints: image-conditioned (I2V, interpolation, multi-view,
I2V + camera LoRA) and text-conditioned video stages (stage II/III, ablation models): load a
checkpoint folder, build its conditioning, run the Euler EDM sampler with per-frame
guidance, decode the latents in chunks.

The conditioning is built by `svd_dag.training.conditioning_frames`, the code training
used, so samples see exactly the inputs the model was trained on. For an I2V checkpoint
this reproduces diffusers' `StableVideoDiffusionPipeline` on the same folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from svd_dag.sampling.euler import Guidance, sample_euler
from svd_dag.training.conditioning import SVD_DEFAULT_MOTION_BUCKET

SVD_DEFAULT_FPS = 7  # diffusers' StableVideoDiffusionPipeline defaults
SVD_DEFAULT_NOISE_AUG = 0.02


@dataclass
class VideoModel:
    folder: str
    task: str
    unet: Any
    vae: Any
    encoder: Any  # conditioning_frames.ImageEncoder, or components.TextEncoder for text stages
    meta: dict[str, Any]
    adapters: list[str] = field(default_factory=list)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device, dtype=torch.float32) -> "VideoModel":
        self.unet.to(device, dtype)
        self.vae.to(device, dtype)
        self.encoder.model.to(device, dtype)
        return self


def load_video_model(folder: str, adapter: str | None = None) -> VideoModel:
    """An image-conditioned checkpoint folder written by the trainer (local path), with an
    optional camera adapter folder loaded onto its UNet."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from svd_dag.training.conditioning_frames import load_image_encoder
    from svd_dag.training.finetune_models import load_temporal_lora

    meta_path = os.path.join(folder, "svd_dag_training.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{folder}: not a svd-dag checkpoint (svd_dag_training.json is missing)")
    with open(meta_path) as f:
        meta = json.load(f)
    task = meta.get("task", "text")
    if task == "text":
        return _load_text_model(folder, meta, adapter)
    if not os.path.isdir(os.path.join(folder, "image_encoder")):
        raise FileNotFoundError(f"{folder}: a {task} checkpoint without image_encoder/ (incomplete copy?)")
    unet = UNetSpatioTemporalConditionModel.from_pretrained(os.path.join(folder, "unet")).eval()
    vae = AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(folder, "vae")).eval()
    encoder = load_image_encoder("folder", unet.config.cross_attention_dim, folder=os.path.join(folder, "image_encoder"))
    adapters = []
    if adapter:
        load_temporal_lora(unet, adapter)
        adapters.append(adapter)
    return VideoModel(folder, task, unet.requires_grad_(False), vae.requires_grad_(False), encoder, meta, adapters)


def _load_text_model(folder: str, meta: dict, adapter: str | None) -> VideoModel:
    """A text-to-video stage checkpoint (EMA weights); its text tower is rebuilt from the
    recorded architecture and seed (tiny: seeded random init) or the model store."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from svd_dag.model_store import ModelStore
    from svd_dag.training.components import load_text_encoder

    config = meta["config"]
    if config.get("stage") != "video":
        raise ValueError(f"{folder}: an image (stage I) checkpoint does not generate video")
    if adapter:
        raise ValueError("camera adapters apply to the I2V model")
    store = (ModelStore(config["models_uri"], os.path.join(folder, ".model_cache"))
             if config.get("models_uri") and config.get("profile") == "full" else None)
    text = load_text_encoder(config["text_arch"], store, config.get("seed", 0))
    unet = UNetSpatioTemporalConditionModel.from_pretrained(os.path.join(folder, "unet_ema")).eval()
    vae = AutoencoderKLTemporalDecoder.from_pretrained(os.path.join(folder, "vae")).eval()
    return VideoModel(folder, "text", unet.requires_grad_(False), vae.requires_grad_(False), text, meta)


def to_model_pixels(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> [3, height, width] in [-1, 1] (resize + centre crop, as in training)."""
    from svd_dag.training.clip_reader import resize_center_crop

    arr = resize_center_crop(image, height, width)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 127.5 - 1.0


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """[B, F, C, h, w] scaled latents -> [B, F, 3, H, W] in [-1, 1], `chunk` frames per VAE call
    (the temporal decoder's memory grows with the frames decoded together)."""
    b, f = latents.shape[:2]
    flat = latents.flatten(0, 1) / vae.config.scaling_factor
    out = [vae.decode(flat[i : i + chunk], num_frames=min(chunk, flat.shape[0] - i)).sample
           for i in range(0, flat.shape[0], chunk)]
    return torch.cat(out).unflatten(0, (b, f))


@torch.no_grad()
def generate(model: VideoModel, images: list[np.ndarray], *, num_frames: int, height: int, width: int,
             steps: int = 25, guidance: Guidance | None = None, seed: int = 0, fps: float = SVD_DEFAULT_FPS,
             motion_bucket: int = SVD_DEFAULT_MOTION_BUCKET, noise_aug_strength: float = SVD_DEFAULT_NOISE_AUG,
             elevation_deg: float | None = None, decode_chunk_size: int = 8, device: str = "cpu",
             prompt: str | None = None) -> np.ndarray:
    """One video, uint8 RGB [F, H, W, 3], from its conditioning: one image for I2V and
    multi-view (plus `elevation_deg`), the first and the last frame for interpolation, a
    `prompt` for text-to-video stages (`images` empty)."""
    from svd_dag.training.conditioning import added_time_ids
    from svd_dag.training.conditioning_frames import ImageConditioning, build_image_conditioning, cond_frame_count

    if model.task == "text":
        if prompt is None or images:
            raise ValueError("a text-to-video model takes a prompt and no conditioning image")
    elif len(images) != cond_frame_count(model.task):
        raise ValueError(f"a {model.task} model takes {cond_frame_count(model.task)} conditioning image(s), got {len(images)}")
    if height % model.vae_scale or width % model.vae_scale:
        raise ValueError(f"height and width must be multiples of {model.vae_scale}, got {height}x{width}")
    if model.task == "multiview" and elevation_deg is None:
        raise ValueError("a multi-view model needs the camera elevation (elevation_deg)")
    guidance = guidance or (Guidance.svd14() if num_frames <= 14 else Guidance.svd25())
    strength = torch.tensor([float(noise_aug_strength)])
    if model.task == "text":  # no concatenated channels; the unconditional text input is zeros, as trained
        hidden = model.encoder.encode([prompt], device)
        empty = torch.zeros(1, num_frames, 0, height // model.vae_scale, width // model.vae_scale)
        cond = ImageConditioning(hidden, empty, strength, 0)
        uncond = ImageConditioning(torch.zeros_like(hidden), empty, strength, 0)
    else:
        frames = torch.stack([to_model_pixels(im, height, width) for im in images]).unsqueeze(0).to(device)
        cond = build_image_conditioning(model.task, model.vae, model.encoder, frames, num_frames, strength,
                                        generator=torch.Generator().manual_seed(seed + 1))
        uncond = cond.unconditional()
    # Text stages were trained with a fixed noise-strength micro-condition; image ones see the augmentation.
    noise_id = model.meta["config"].get("cond_noise_strength", 0.0) if model.task == "text" else noise_aug_strength
    ids = added_time_ids(fps, motion_bucket, noise_id, batch_size=1)
    if model.task == "multiview":
        ids = torch.cat([ids, torch.tensor([[float(elevation_deg)]])], dim=1)
    ids = ids.to(device)
    dtype = next(model.unet.parameters()).dtype

    guided = not bool((guidance.scales(num_frames) == 1.0).all())
    both = {k: torch.cat([getattr(uncond, k), getattr(cond, k)]).to(device, dtype) for k in ("concat", "hidden")}
    pending: dict[str, torch.Tensor] = {}

    def unet(x_in: torch.Tensor, c: dict, c_noise: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x_in.to(dtype), c["concat"].to(device, dtype)], dim=2)
        n = x.shape[0]
        return model.unet(x, c_noise[:1].expand(n).to(device, dtype), encoder_hidden_states=c["hidden"].to(device, dtype),
                          added_time_ids=ids.to(dtype).expand(n, -1)).sample

    def network(x_in: torch.Tensor, c_noise: torch.Tensor, conditional: bool) -> torch.Tensor:
        # With guidance the sampler asks for the conditional then the unconditional output of the
        # same input: compute both in one batched call (as diffusers does) and hand out the second.
        if not guided:
            return unet(x_in, {"concat": cond.concat, "hidden": cond.hidden}, c_noise).to(x_in.dtype)
        if conditional:
            out_u, out_c = unet(torch.cat([x_in, x_in]), both, c_noise).chunk(2)
            pending["uncond"] = out_u
            return out_c.to(x_in.dtype)
        return pending.pop("uncond").to(x_in.dtype)

    channels = model.vae.config.latent_channels
    shape = (1, num_frames, channels, height // model.vae_scale, width // model.vae_scale)
    latents = sample_euler(network, shape, num_steps=steps, guidance=guidance, seed=seed, device=device)
    video = decode_latents(model.vae, latents.to(dtype), decode_chunk_size)[0]
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
