"""Deterministic Euler sampler for EDM v-form models, with SVD's per-frame guidance ramp.

This is the loop Stable Video Diffusion runs with diffusers' `EulerDiscreteScheduler` in
the configuration `SVD_SCHEDULER_CONFIG` (v-prediction, Karras sigmas 700 -> 0.002,
"leading" spacing, no churn), written directly on the EDM scalings of
`svd_dag.training.edm` so it needs no scheduler object:

    x_N = sqrt(1 + sigma_0^2) * n,          n ~ N(0, I) from a CPU generator
    D_i = c_skip x + c_out F(c_in x, c_noise)        (edm_scalings at sigma_i)
    x  <- x + (sigma_{i+1} - sigma_i) (x - D_i) / sigma_i,   and the last step returns D

Classifier-free guidance mixes an unconditional and a conditional prediction,
D = D_u + s (D_c - D_u); for video latents [B, F, C, H, W] the scale s varies per frame
(SVD ramps it linearly from the first to the last frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from svd_dag.training.edm import RHO, SIGMA_MAX, SIGMA_MIN, edm_scalings, karras_sigmas

# diffusers' scheduler config of stabilityai/stable-video-diffusion-img2vid(-xt); saved as
# scheduler/scheduler_config.json in a pipeline folder. Copy it before changing anything.
SVD_SCHEDULER_CONFIG: dict = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": SIGMA_MAX,
    "sigma_min": SIGMA_MIN,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}


class GuidedModelFn(Protocol):
    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, conditional: bool) -> torch.Tensor:
        """Network output F for the scaled input c_in * x; c_noise has shape [B]."""
        ...


# callback(step, sigma, x, denoised): after each step; x is the new state, denoised is D at sigma.
StepCallback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def sampling_sigmas(
    num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> torch.Tensor:
    """Karras sigmas for `num_steps` Euler steps: float64 [num_steps + 1], sigma_max ... sigma_min, 0."""
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
        raise ValueError(
            f"need 0 < sigma_min < sigma_max (finite), got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho}")
    return karras_sigmas(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)


def guidance_scales(num_frames: int, min_scale: float, max_scale: float) -> torch.Tensor:
    """Per-frame guidance scales: a linear ramp from min_scale (frame 0) to max_scale (last), float32 [F].

    SVD uses 1.0 -> 2.5 for 14 frames and 1.5 -> 3.0 for 25. min_scale > max_scale gives a
    descending ramp; one frame gets min_scale.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    for name, value in (("min_scale", min_scale), ("max_scale", max_scale)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    return torch.linspace(min_scale, max_scale, num_frames, dtype=torch.float32)


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance as a per-frame linear ramp (min_scale on frame 0, max_scale on the last).

    Scale 1.0 means the conditional prediction alone (no unconditional call is made); 0.0 the
    unconditional alone. Images (4-D latents) use min_scale. min_scale > max_scale is allowed
    (a descending ramp).
    """

    min_scale: float = 1.0
    max_scale: float = 2.5

    def __post_init__(self) -> None:
        for name in ("min_scale", "max_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Guidance.{name} must be a finite number, got {value!r}")

    @classmethod
    def svd14(cls) -> Guidance:
        """SVD's default for 14-frame models: 1.0 -> 2.5."""
        return cls(1.0, 2.5)

    @classmethod
    def svd25(cls) -> Guidance:
        """SVD-XT's default for 25-frame models: 1.5 -> 3.0."""
        return cls(1.5, 3.0)

    @classmethod
    def constant(cls, scale: float) -> Guidance:
        """The same scale on every frame."""
        return cls(scale, scale)

    def scales(self, num_frames: int) -> torch.Tensor:
        """float32 [num_frames] ramp (see `guidance_scales`)."""
        return guidance_scales(num_frames, self.min_scale, self.max_scale)


NO_GUIDANCE = Guidance.constant(1.0)


def _scale_tensor(guidance: Guidance, shape: tuple[int, ...]) -> torch.Tensor:
    """Scales broadcastable against latents: [1, F, 1, 1, 1] for video, a 0-d tensor for images."""
    if len(shape) == 5:
        return guidance.scales(shape[1]).reshape(1, shape[1], 1, 1, 1)
    return torch.tensor(float(guidance.min_scale), dtype=torch.float32)


def initial_noise(
    shape: tuple[int, ...],
    sigma_max: float,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """randn(shape) * sqrt(1 + sigma_max^2) in `dtype`, on the generator's device (CPU for a seed).

    The normal draw is always float32 (the same numbers for every dtype); the scaling is done in `dtype`.
    """
    if generator is not None and seed is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(0 if seed is None else int(seed))
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(dtype) * math.sqrt(1.0 + sigma_max**2)


@torch.no_grad()
def sample_euler(
    model_fn: GuidedModelFn,
    shape: tuple[int, ...] | torch.Size,
    *,
    num_steps: int = 25,
    guidance: Guidance | None = None,
    seed: int | None = None,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample latents of `shape` ([B, C, H, W] images or [B, F, C, H, W] videos) from a v-form EDM model.

    model_fn(x_in, c_noise, conditional) -> F gets x_in = c_in * x in `dtype` on `device` and
    c_noise = 0.25 ln sigma of shape [B]. guidance=None means no guidance (scale 1.0).
    The initial noise comes from `generator` if given, else from a CPU generator seeded with
    `seed` (0 when neither is given), so a seed gives the same latents on every device.
    The state x stays in float32 (float64 when dtype is float64) between steps and is
    returned in `dtype`; diffusers instead rounds x to the model dtype after every step, so
    fp16/bf16 runs differ from its loop by that rounding.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise ValueError(f"shape must be [B, C, H, W] or [B, F, C, H, W] with positive sizes, got {shape}")
    guidance = NO_GUIDANCE if guidance is None else guidance
    if not isinstance(guidance, Guidance):
        raise ValueError(f"guidance must be a Guidance (or None), got {type(guidance).__name__}")
    sigmas = sampling_sigmas(num_steps, sigma_min, sigma_max, rho).tolist()

    state_dtype = torch.promote_types(dtype, torch.float32)
    scales = _scale_tensor(guidance, shape).to(device=device, dtype=state_dtype)
    guided = not bool((scales == 1.0).all())
    x = initial_noise(shape, sigmas[0], seed=seed, generator=generator, dtype=state_dtype).to(device)
    batch = shape[0]

    def network(x_in: torch.Tensor, c_noise: torch.Tensor, conditional: bool) -> torch.Tensor:
        out = model_fn(x_in, c_noise, conditional)
        if tuple(out.shape) != shape:
            raise ValueError(f"model_fn returned shape {tuple(out.shape)}, expected the latent shape {shape}")
        return out.to(state_dtype)

    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        scalings = edm_scalings(torch.tensor(sigma, dtype=torch.float64))
        c_skip, c_out, c_in, c_noise = (float(c) for c in scalings)
        x_in = (x * c_in).to(dtype)
        c_noise_b = torch.full((batch,), c_noise, dtype=dtype, device=device)
        out = network(x_in, c_noise_b, True)
        if guided:
            # lerp(u, c, 1.0) returns c exactly, so frames with scale 1.0 match the unguided run bit for bit.
            out = torch.lerp(network(x_in, c_noise_b, False), out, scales)
        denoised = c_skip * x + c_out * out  # D is affine in F with shared c_skip x: guiding F guides D
        x = denoised if sigma_next == 0.0 else x + (sigma_next - sigma) * (x - denoised) / sigma
        if callback is not None:
            callback(i, sigma, x, denoised)
    return x.to(dtype)


__all__ = [
    "Guidance",
    "GuidedModelFn",
    "NO_GUIDANCE",
    "SVD_SCHEDULER_CONFIG",
    "StepCallback",
    "guidance_scales",
    "initial_noise",
    "sample_euler",
    "sampling_sigmas",
]
