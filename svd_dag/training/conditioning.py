"""Micro-conditioning (fps, motion bucket, conditioning-noise strength) and text dropout.

The video UNet embeds each of the three micro-conditions sinusoidally
(`addition_time_embed_dim` each: 256 full size), in SVD's order and conventions:
[fps - 1, motion_bucket_id, cond_noise_strength] (diffusers' SVD pipeline subtracts 1
from fps because the released model was trained on fps - 1).

Motion bucket id. The curation motion score is the mean Farneback flow magnitude in
pixels at 320 px frame width per 0.5 s (svd_dag.curation.motion). It maps linearly to
SVD's bucket range 0..255, saturating at `saturation_score`:

    bucket = round(255 * clip(score / saturation_score, 0, 1))

With the default saturation of 20 px (6% of the frame width per half second, fast
motion) a score of 10 px lands on 127/128, the bucket the released SVD uses as its
default. Stability never published its own mapping; this one is monotone, clipped and
configurable, which is what the conditioning needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_MOTION_BUCKET = 255
SVD_DEFAULT_MOTION_BUCKET = 127
DEFAULT_MOTION_SATURATION = 20.0  # px at 320 px width per 0.5 s
TEXT_DROPOUT = 0.15  # SPEC section 3, for classifier-free guidance

Number = int | float
Values = Number | Sequence[Number] | torch.Tensor


def motion_bucket_id(
    motion_score: Values,
    saturation_score: float = DEFAULT_MOTION_SATURATION,
    max_bucket: int = MAX_MOTION_BUCKET,
) -> int | torch.Tensor:
    """Motion score -> bucket id in [0, max_bucket] (int for a scalar, long tensor otherwise)."""
    if saturation_score <= 0:
        raise ValueError("saturation_score must be positive")
    scores = torch.as_tensor(motion_score, dtype=torch.float64)
    if torch.isnan(scores).any():
        raise ValueError("motion score is NaN: an unscored clip has no motion bucket")
    buckets = torch.round(max_bucket * (scores / saturation_score).clamp(0.0, 1.0)).long()
    if isinstance(motion_score, (int, float)):
        return int(buckets)
    return buckets


def added_time_ids(
    fps: Values,
    motion_bucket_id: Values,
    cond_noise_strength: Values,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """[B, 3] float tensor of [fps - 1, motion_bucket_id, cond_noise_strength] per sample.

    `fps` is the clip's real frame rate (after frame subsampling); the -1 is applied here,
    so callers never pass fps - 1 themselves. Scalars broadcast to `batch_size` (or to
    the length of the other arguments).
    """
    columns = [
        torch.as_tensor(fps, dtype=torch.float64) - 1.0,
        torch.as_tensor(motion_bucket_id, dtype=torch.float64),
        torch.as_tensor(cond_noise_strength, dtype=torch.float64),
    ]
    if any(c.ndim > 1 for c in columns):
        raise ValueError("micro-conditions must be scalars or 1-D per-sample values")
    sizes = {c.shape[0] for c in columns if c.ndim == 1}
    if batch_size is not None:
        sizes.add(batch_size)
    if len(sizes) > 1:
        raise ValueError(f"micro-conditions disagree on the batch size: {sorted(sizes)}")
    batch = sizes.pop() if sizes else 1
    ids = torch.stack([c.expand(batch) for c in columns], dim=1)
    return ids.to(dtype=dtype, device=device)


def text_dropout_mask(
    batch: int,
    p: float = TEXT_DROPOUT,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool [batch]: True where a sample's text conditioning is dropped (iid, probability p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError("p must be in [0, 1]")
    # Draw on the generator's device (CPU by default) so a seed reproduces on any device.
    draws = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu")
    return (draws < p).to(device) if device is not None else draws < p


def drop_text_conditioning(
    embeddings: torch.Tensor,
    p: float = TEXT_DROPOUT,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero the text embedding of each sample independently with probability p.

    Zeros (not an empty-prompt embedding) are the unconditional input, as in sgm's
    conditioner with ucg_rate; the sampler must use zeros for the unconditional branch.
    Returns a new tensor; `embeddings` has the batch on dim 0 ([B, T, D] or [B, D]).
    """
    dropped = text_dropout_mask(embeddings.shape[0], p, generator, device=embeddings.device)
    dropped = dropped.reshape(-1, *([1] * (embeddings.ndim - 1)))
    return torch.where(dropped, torch.zeros((), dtype=embeddings.dtype, device=embeddings.device), embeddings)


__all__ = [
    "DEFAULT_MOTION_SATURATION",
    "MAX_MOTION_BUCKET",
    "SVD_DEFAULT_MOTION_BUCKET",
    "TEXT_DROPOUT",
    "added_time_ids",
    "drop_text_conditioning",
    "motion_bucket_id",
    "text_dropout_mask",
]
