"""EDM preconditioning in v-form with sigma_data = 1 (sgm's `VScalingWithEDMcNoise`).

With x_noisy = x0 + sigma * n, the denoiser is

    D(x_noisy; sigma) = c_skip * x_noisy + c_out * F(c_in * x_noisy, c_noise)

    c_skip = 1 / (sigma^2 + 1)      c_out = -sigma / sqrt(sigma^2 + 1)
    c_in   = 1 / sqrt(sigma^2 + 1)  c_noise = 0.25 * ln(sigma)

and training minimises w(sigma) * ||D - x0||^2 with w = (1 + sigma^2) / sigma^2 (sgm's
`EDMWeighting` at sigma_data = 1), where ln sigma ~ N(P_mean, P_std^2), one sigma per
sample (per video, shared by all its frames). With these scalings the network's target
(the F for which D = x0) is the v-prediction F* = (n - sigma * x0) / sqrt(1 + sigma^2),
and the weighted loss equals ||F - F*||^2 (w * c_out^2 = 1).

`model_fn(scaled_input, c_noise) -> F` is any callable; c_noise has shape [B].
"""

from __future__ import annotations

from typing import Callable

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Sampling schedule defaults (SPEC section 3: Euler EDM, sigma 0.002..700, rho 7).
SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, ...] broadcastable against `like` (one value per sample)."""
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def edm_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for each sigma, elementwise."""
    sigma = torch.as_tensor(sigma)
    s2p1 = sigma**2 + 1.0
    c_skip = 1.0 / s2p1
    c_out = -sigma / s2p1.sqrt()
    c_in = 1.0 / s2p1.sqrt()
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """(1 + sigma^2) / sigma^2: makes the denoiser loss a unit-weight loss on F."""
    sigma = torch.as_tensor(sigma)
    return (1.0 + sigma**2) / sigma**2


def sample_training_sigmas(
    batch: int,
    p_mean: float,
    p_std: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ln sigma ~ N(p_mean, p_std^2): shape [batch], one sigma per video (not per frame)."""
    log_sigma = torch.randn(batch, generator=generator, device=device, dtype=dtype) * p_std + p_mean
    return log_sigma.exp()


def add_noise(x0: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x0 + sigma * noise, with sigmas [B] broadcast over every other dimension."""
    return x0 + _expand(sigmas, x0) * noise


def denoise(model_fn: ModelFn, x_noisy: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """D(x_noisy; sigma) = c_skip x + c_out F(c_in x, c_noise); sigmas has shape [B]."""
    c_skip, c_out, c_in, c_noise = edm_scalings(sigmas)
    out = model_fn(x_noisy * _expand(c_in, x_noisy), c_noise)
    return x_noisy * _expand(c_skip, x_noisy) + out * _expand(c_out, x_noisy)


def edm_loss(
    model_fn: ModelFn, x0: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted denoising MSE: (per-sample loss [B], its mean as a scalar).

    Per sample: w(sigma) * mean over all non-batch dims of (D(x0 + sigma n; sigma) - x0)^2.
    """
    if sigmas.shape != (x0.shape[0],):
        raise ValueError(f"sigmas must have shape [B]={x0.shape[0]}, got {tuple(sigmas.shape)}")
    denoised = denoise(model_fn, add_noise(x0, sigmas, noise), sigmas)
    dtype = torch.promote_types(x0.dtype, torch.float32)  # bf16/fp16 activations: reduce in fp32
    sq_err = (denoised.to(dtype) - x0.to(dtype)) ** 2
    per_sample = loss_weight(sigmas.to(dtype)) * sq_err.reshape(x0.shape[0], -1).mean(dim=1)
    return per_sample, per_sample.mean()


def karras_sigmas(
    num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> torch.Tensor:
    """Karras et al. (2022) schedule: num_steps sigmas from sigma_max down to sigma_min, then 0.

    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    Returns float64 of shape [num_steps + 1] (float64 keeps sigma_min exact at rho = 7).
    """
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def v_target(x0: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The network output F that makes D return x0 exactly: F = (x0 - c_skip x) / c_out."""
    c_skip, c_out, _, _ = edm_scalings(sigmas)
    x_noisy = add_noise(x0, sigmas, noise)
    return (x0 - _expand(c_skip, x0) * x_noisy) / _expand(c_out, x0)


__all__ = [
    "RHO",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "add_noise",
    "denoise",
    "edm_loss",
    "edm_scalings",
    "karras_sigmas",
    "loss_weight",
    "sample_training_sigmas",
    "v_target",
]
