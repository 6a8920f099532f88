"""Image conditioning for the fine-tunes: the same tensors at training and sampling time.

SVD's image-to-video model (and the interpolation and multi-view models built from it)
replaces the text tokens with CLIP image embeddings of the conditioning frame(s) and
concatenates their VAE latents channel-wise to every frame's noisy latent:

- embedding: the clean frame in [-1, 1], resized with antialiasing to the vision tower's
  input size, mapped to [0, 1], normalised with CLIP's mean/std, `image_embeds` ([B, K, D],
  K = 1 for I2V / multi-view, 2 for interpolation: first and last frame);
- latent: the frame noised in pixel space with strength s (ln s ~ N(-3.0, 0.5^2) in
  training; a fixed `noise_aug_strength` when sampling, as in diffusers' pipeline), encoded
  by the VAE and taken at the posterior *mode*, *unscaled*; s is also the third
  micro-condition;
- interpolation adds a mask channel (1 on the given frames) after the latents: 4 + 4 + 1 = 9
  input channels. I2V and multi-view: 4 + 4 = 8.

The unconditional branch of classifier-free guidance is zeros for the embedding and for the
latent (diffusers' `StableVideoDiffusionPipeline` does the same), which is what the
dropout below trains. This mirrors the pipeline's `_encode_image` / `_encode_vae_image`
so an I2V checkpoint saved as a diffusers pipeline folder behaves there as it did here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_VISION = "svd-tiny-vision"
CONCAT_CHANNELS = {"i2v": 1, "multiview": 1, "interpolation": 2}  # conditioning latents per sample


def cond_frame_count(task: str) -> int:
    return CONCAT_CHANNELS[task]


def extra_in_channels(task: str, latent_channels: int) -> int:
    """Channels concatenated to the noisy latent: conditioning latent (+ mask for interpolation)."""
    return latent_channels + (1 if task == "interpolation" else 0)


@dataclass
class ImageEncoder:
    model: Any  # transformers CLIPVisionModelWithProjection
    processor: Any  # transformers CLIPImageProcessor (saved as the pipeline's feature_extractor)
    weights: str  # "random" | "pretrained"
    version: str

    @property
    def size(self) -> int:
        return int(self.model.config.image_size)

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] (clean) -> image embeddings [N, D]."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

        x = _resize_with_antialiasing(frames.float(), (self.size, self.size))
        x = (x + 1.0) / 2.0
        mean = torch.tensor(self.processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.image_std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        dtype = next(self.model.parameters()).dtype
        return self.model(x.to(dtype)).image_embeds


def tiny_vision_config(projection_dim: int) -> dict[str, Any]:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=224,
                patch_size=32, projection_dim=projection_dim)


def load_image_encoder(name: str, projection_dim: int, store=None, seed: int = 0, folder: str | None = None) -> ImageEncoder:
    """`folder`: a saved pipeline's image_encoder/ (wins); "store": <model store>/image_encoder/ and
    feature_extractor/ (SVD's OpenCLIP ViT-H vision tower in transformers layout); the tiny
    name: a one-layer CLIP vision tower with random init (seeded), labelled random."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if folder is None and name == "store":
        found = store.find("image_encoder/config.json") if store is not None else None
        if found is None:
            where = store.describe("image_encoder") if store is not None else "<model store>/image_encoder"
            raise FileNotFoundError(f"image_encoder=store needs a transformers CLIPVisionModelWithProjection folder at {where}/ "
                                    "(SVD's image_encoder) and its feature_extractor/ beside it")
        folder = os.path.dirname(found)
    if folder is not None:
        model = CLIPVisionModelWithProjection.from_pretrained(folder)
        fe = os.path.join(os.path.dirname(folder), "feature_extractor")
        processor = CLIPImageProcessor.from_pretrained(fe) if os.path.isdir(fe) else _processor(model.config.image_size)
        weights = _read_label(folder)
        return ImageEncoder(model.eval().requires_grad_(False), processor, weights, f"image_encoder@{folder}")
    if name != TINY_VISION:
        raise ValueError(f"image_encoder must be {TINY_VISION!r} or 'store', got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny_vision_config(projection_dim)))
    model.config.svd_dag_weights = "random"
    return ImageEncoder(model.eval().requires_grad_(False), _processor(224), "random",
                        f"{TINY_VISION}@random-init-seed{seed}")


def _read_label(folder: str) -> str:
    import json

    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f).get("svd_dag_weights", "pretrained")


def _processor(size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


@torch.no_grad()
def encode_condition_latents(vae, frames: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] (already noised) -> posterior mode, unscaled [N, C, h, w]."""
    return vae.encode(frames.to(vae.dtype)).latent_dist.mode()


def condition_sigmas(batch: int, p_mean: float, p_std: float, generator: torch.Generator) -> torch.Tensor:
    """Pixel-space noise strength per sample: ln s ~ N(p_mean, p_std^2) (SVD: -3.0, 0.5)."""
    return (torch.randn(batch, generator=generator) * p_std + p_mean).exp()


@dataclass
class ImageConditioning:
    hidden: torch.Tensor  # [B, K, D] image embeddings (cross-attention tokens)
    concat: torch.Tensor  # [B, F, C', h, w] channels appended to the noisy latent of every frame
    strength: torch.Tensor  # [B] pixel noise strength (the third micro-condition)
    latent_channels: int  # leading channels of `concat` that are latents (the rest: the mask)

    def unconditional(self) -> "ImageConditioning":
        """Zeros for embedding and latents (the mask channel of interpolation stays)."""
        concat = self.concat.clone()
        concat[:, :, : self.latent_channels] = 0
        return ImageConditioning(torch.zeros_like(self.hidden), concat, self.strength, self.latent_channels)


def build_image_conditioning(task: str, vae, encoder: ImageEncoder, frames: torch.Tensor, num_frames: int,
                             strength: torch.Tensor, generator: torch.Generator | None = None,
                             drop_image: torch.Tensor | None = None, drop_latent: torch.Tensor | None = None,
                             ) -> ImageConditioning:
    """frames: the clean conditioning frames [B, K, 3, H, W] in [-1, 1] (K from `cond_frame_count`).

    `drop_image` / `drop_latent` are bool [B] masks zeroing the embedding / latent of a sample
    (classifier-free-guidance dropout at training time; None at sampling time).
    """
    b, k = frames.shape[:2]
    if k != cond_frame_count(task):
        raise ValueError(f"the {task} task takes {cond_frame_count(task)} conditioning frame(s), got {k}")
    flat = frames.flatten(0, 1)
    hidden = encoder.embed(flat).unflatten(0, (b, k))
    noise = torch.randn(flat.shape, generator=generator).to(flat.device, flat.dtype)
    s = strength.to(flat.device, flat.dtype).repeat_interleave(k).view(-1, 1, 1, 1)
    latents = encode_condition_latents(vae, flat + s * noise).unflatten(0, (b, k)).float()
    c, h, w = latents.shape[2:]
    if drop_image is not None:
        hidden = torch.where(drop_image.view(-1, 1, 1).to(hidden.device), torch.zeros_like(hidden), hidden)
    if drop_latent is not None:
        latents = torch.where(drop_latent.view(-1, 1, 1, 1, 1).to(latents.device), torch.zeros_like(latents), latents)
    if task == "interpolation":
        concat = latents.new_zeros(b, num_frames, c + 1, h, w)
        concat[:, 0, :c], concat[:, -1, :c] = latents[:, 0], latents[:, 1]
        concat[:, 0, c], concat[:, -1, c] = 1.0, 1.0
    else:
        concat = latents[:, :1].expand(b, num_frames, c, h, w).clone()
    return ImageConditioning(hidden, concat, strength, c)


def conditioning_frames_of(task: str, pixels: torch.Tensor) -> torch.Tensor:
    """The clean conditioning frames of a training clip [B, F, 3, H, W]: the first frame (I2V,
    multi-view: the first view), or the first and the last (interpolation)."""
    if task == "interpolation":
        return torch.stack([pixels[:, 0], pixels[:, -1]], dim=1)
    return pixels[:, :1]
