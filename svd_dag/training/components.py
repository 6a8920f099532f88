"""The frozen parts around the UNet: the VAE and the open_clip text tower.

Full profile: SD 2.1's VAE (a diffusers `vae/` folder in the model store, with SVD's
temporal decoder) and OpenCLIP ViT-H-14's text tower (`clip/ViT-H-14.*`). Tiny profile: a
small `AutoencoderKLTemporalDecoder` and a one-layer open_clip text tower, random init
with a fixed seed (labelled `weights=random`), so every stage of a tiny run sees the same
latent space and the fine-tunes stay loadable by diffusers' SVD pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from svd_dag.model_store import ModelStore

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
TINY_TEXT_ARCH = "svd-tiny-text"

TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "block_out_channels": [32, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}


@dataclass
class TextEncoder:
    model: Any
    tokenizer: Any
    arch: str
    weights: str
    version: str
    width: int

    @torch.no_grad()
    def encode(self, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Per-token hidden states [B, T, width] (what the UNet cross-attends to)."""
        m = self.model
        tokens = self.tokenizer([t or "" for t in texts]).to(device)
        x = m.token_embedding(tokens) + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        return m.ln_final(x)


def load_text_encoder(arch: str, store: ModelStore | None, seed: int = 0) -> TextEncoder:
    from svd_dag.curation.clip_model import build_open_clip, open_clip_version
    from svd_dag.curation.compat import import_open_clip

    import_open_clip().add_model_config(CONFIG_DIR)
    built = build_open_clip(arch, "clip", store, seed)
    path = store.find_weights("clip", arch) if store is not None else None
    weights, version = open_clip_version(arch, path, seed)
    model = built.model.eval().requires_grad_(False)
    return TextEncoder(model, built.tokenizer, arch, weights, version, int(model.ln_final.normalized_shape[0]))


def build_vae(profile: str, store: ModelStore | None, seed: int = 0):
    """(vae, weights label, version). A stored `vae/` folder wins over the tiny random init."""
    from diffusers import AutoencoderKLTemporalDecoder

    folder = store.find("vae/config.json") if store is not None else None
    if folder:
        vae = AutoencoderKLTemporalDecoder.from_pretrained(os.path.dirname(folder))
        return vae.eval().requires_grad_(False), "pretrained", f"vae@{os.path.dirname(folder)}"
    if profile == "full":
        raise FileNotFoundError(
            "the full profile needs SD 2.1's VAE with SVD's temporal decoder as a diffusers folder at "
            f"{store.describe('vae') if store else '<model store>/vae'}/"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLTemporalDecoder(**TINY_VAE_CONFIG)
    return vae.eval().requires_grad_(False), "random", f"tiny-vae@random-init-seed{seed}"


def fit_tiny_vae(vae, clips: torch.Tensor, steps: int = 120, batch_size: int = 2, lr: float = 2e-3,
                 kl_weight: float = 1e-6, seed: int = 0) -> dict:
    """Fit the tiny profile's VAE to real clips ([N, F, 3, H, W] in [-1, 1]) so its latents
    mean something: reconstruction L1 + MSE with a small KL term, each clip decoded as F
    frames together so the temporal decoder learns its frame mixing too. Then sets
    `scaling_factor` to 1 / std of the latents, as SD did for its VAE. In place; returns
    {"vae_fit_steps", "vae_fit_l1"} (mean absolute error in [-1, 1] units, last 10%)."""
    if clips.ndim != 5 or clips.shape[0] == 0:
        raise ValueError(f"fit_tiny_vae needs clips [N, F, 3, H, W], got {tuple(clips.shape)}")
    gen = torch.Generator().manual_seed(seed)
    frames_per_clip = clips.shape[1]
    vae.train().requires_grad_(True)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    errors = []
    for _ in range(steps):
        idx = torch.randint(0, clips.shape[0], (min(batch_size, clips.shape[0]),), generator=gen)
        x = clips[idx].flatten(0, 1)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen), num_frames=frames_per_clip).sample
        l1 = (recon - x).abs().mean()
        loss = l1 + ((recon - x) ** 2).mean() + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        errors.append(l1.item())
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        std = float(vae.encode(clips[:16].flatten(0, 1)).latent_dist.mode().std())
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    window = max(1, steps // 10)
    return {"vae_fit_steps": steps, "vae_fit_l1": round(sum(errors[-window:]) / window, 4)}


@torch.no_grad()
def encode_frames(vae, frames: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> scaled latents [N, C, h, w] (a sample of the posterior), in
    the VAE's dtype (the training's, when it runs frozen in bf16/fp16)."""
    return vae.encode(frames.to(vae.dtype)).latent_dist.sample() * vae.config.scaling_factor
