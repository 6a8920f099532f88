"""The EDM Euler sampler against diffusers' EulerDiscreteScheduler (the reference), closed forms, guidance."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from svd_dag.sampling.euler import (
    SVD_SCHEDULER_CONFIG,
    Guidance,
    guidance_scales,
    sample_euler,
    sampling_sigmas,
)
from svd_dag.training.edm import edm_scalings

VIDEO_SHAPE = (1, 14, 4, 6, 6)  # [B, F, C, H, W]
IMAGE_SHAPE = (2, 4, 6, 6)  # [B, C, H, W]


class PixelMixer:
    """A fixed random network acting on each pixel of each frame independently (frames never mix).

    F = tanh(W x_in) + a * c_noise + (b_cond or b_uncond); counts its unconditional calls.
    """

    def __init__(self, channels: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(channels, channels, generator=gen) * 0.5
        self.noise_gain = torch.randn(channels, generator=gen) * 0.1
        self.bias_cond = torch.randn(channels, generator=gen) * 0.3
        self.bias_uncond = torch.randn(channels, generator=gen) * 0.3
        self.unconditional_calls = 0

    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor, conditional: bool) -> torch.Tensor:
        if not conditional:
            self.unconditional_calls += 1
        dtype = x_in.dtype
        mixed = torch.einsum("...chw,dc->...dhw", x_in, self.weight.to(dtype)).tanh()
        per_channel = (self.bias_cond if conditional else self.bias_uncond).to(dtype)
        lead = [x_in.shape[0]] + [1] * (x_in.ndim - 4)
        c = c_noise.to(dtype).reshape(*lead, 1, 1, 1)
        return mixed + c * self.noise_gain.to(dtype)[:, None, None] + per_channel[:, None, None]


def diffusers_reference(model, shape, num_steps: int, seed: int, scales: torch.Tensor | None = None):
    """SVD's pipeline loop: scale_model_input, v-prediction output, per-frame CFG on it, scheduler.step."""
    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(num_steps)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        c_noise = t.expand(shape[0])
        out = model(x_in, c_noise, True)
        if scales is not None:
            uncond = model(x_in, c_noise, False)
            out = uncond + scales * (out - uncond)
        x = scheduler.step(out, t, x).prev_sample
    return x


@pytest.mark.parametrize("num_steps", [25, 7])
def test_sigmas_timesteps_and_init_noise_match_diffusers(num_steps):
    scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(num_steps)
    sigmas = sampling_sigmas(num_steps)
    assert sigmas.dtype == torch.float64 and sigmas.shape == (num_steps + 1,)
    assert sigmas[0] == pytest.approx(700.0, rel=1e-12) and sigmas[-2] == pytest.approx(0.002, rel=1e-12)
    assert sigmas[-1] == 0.0
    torch.testing.assert_close(sigmas.float(), scheduler.sigmas, rtol=2e-6, atol=0)
    torch.testing.assert_close(scheduler.timesteps, (0.25 * sigmas[:-1].log()).float(), rtol=1e-5, atol=1e-6)
    assert float(scheduler.init_noise_sigma) == pytest.approx(math.sqrt(1 + 700.0**2), rel=1e-6)


@pytest.mark.parametrize("shape", [IMAGE_SHAPE, VIDEO_SHAPE], ids=["image", "video"])
def test_unguided_run_matches_diffusers_scheduler_loop(shape):
    model = PixelMixer()
    ours = sample_euler(model, shape, num_steps=25, seed=11)
    reference = diffusers_reference(model, shape, 25, seed=11)
    assert ours.shape == shape and ours.abs().max() < 20  # the sampled scale, not 700 noise
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=2e-5)


def test_per_frame_guided_run_matches_svd_pipeline_loop():
    model = PixelMixer()
    guidance = Guidance.svd14()
    ours = sample_euler(model, VIDEO_SHAPE, num_steps=12, seed=5, guidance=guidance)
    per_frame = guidance.scales(14).reshape(1, 14, 1, 1, 1)
    reference = diffusers_reference(model, VIDEO_SHAPE, 12, seed=5, scales=per_frame)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=2e-5)


def test_zero_network_follows_the_closed_form_euler_product():
    # F = 0 gives D = x / (1 + sigma^2), so each step multiplies x by 1 + (s' - s) s / (1 + s^2),
    # and the last step returns D = x / (1 + sigma_min^2).
    sigmas = sampling_sigmas(6).tolist()
    factor = math.sqrt(1 + sigmas[0] ** 2)
    for s, s_next in zip(sigmas[:-2], sigmas[1:-1]):
        factor *= 1 + (s_next - s) * s / (1 + s**2)
    factor /= 1 + sigmas[-2] ** 2
    noise = torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(9), dtype=torch.float32)

    def zero_network(x_in, c_noise, conditional):
        return torch.zeros_like(x_in)

    out = sample_euler(zero_network, IMAGE_SHAPE, num_steps=6, seed=9, dtype=torch.float64)
    torch.testing.assert_close(out, noise.double() * factor, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [IMAGE_SHAPE, VIDEO_SHAPE], ids=["image", "video"])
def test_oracle_denoiser_samples_its_target_exactly(shape):
    x0 = torch.linspace(-1, 1, math.prod(shape), dtype=torch.float64).reshape(shape)

    def oracle(x_in, c_noise, conditional):
        sigma = (4 * c_noise).exp().reshape(-1, *[1] * (x_in.ndim - 1))
        c_skip, c_out, c_in, _ = edm_scalings(sigma)
        return (x0 - c_skip * (x_in / c_in)) / c_out  # F that makes D = x0

    seen = []
    out = sample_euler(
        oracle, shape, num_steps=10, seed=1, dtype=torch.float64,
        callback=lambda i, sigma, x, denoised: seen.append((i, sigma, denoised.clone())),
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)
    assert [i for i, _, _ in seen] == list(range(10))
    assert [s for _, s, _ in seen] == sampling_sigmas(10)[:-1].tolist()
    for _, _, denoised in seen:
        torch.testing.assert_close(denoised, x0, rtol=0, atol=1e-9)


def test_seed_determinism():
    model = PixelMixer()
    a = sample_euler(model, VIDEO_SHAPE, num_steps=5, seed=3)
    b = sample_euler(model, VIDEO_SHAPE, num_steps=5, seed=3)
    c = sample_euler(model, VIDEO_SHAPE, num_steps=5, seed=4)
    from_generator = sample_euler(model, VIDEO_SHAPE, num_steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(a, from_generator)
    assert (a - c).abs().max() > 1e-2
    with pytest.raises(ValueError, match="seed or generator"):
        sample_euler(model, VIDEO_SHAPE, num_steps=5, seed=3, generator=torch.Generator())


def test_all_ones_guidance_is_the_conditional_only_sampler():
    model = PixelMixer()
    conditional_only = sample_euler(model, VIDEO_SHAPE, num_steps=8, seed=2)
    constant = sample_euler(model, VIDEO_SHAPE, num_steps=8, seed=2, guidance=Guidance.constant(1.0))
    flat_ramp = sample_euler(model, VIDEO_SHAPE, num_steps=8, seed=2, guidance=Guidance(1.0, 1.0))
    assert torch.equal(conditional_only, constant) and torch.equal(constant, flat_ramp)
    assert model.unconditional_calls == 0


def test_ramp_keeps_frame_zero_and_guides_the_last_frame():
    model = PixelMixer()
    unguided = sample_euler(model, VIDEO_SHAPE, num_steps=8, seed=2)
    ramped = sample_euler(model, VIDEO_SHAPE, num_steps=8, seed=2, guidance=Guidance.svd14())
    assert model.unconditional_calls == 8
    assert torch.equal(ramped[:, 0], unguided[:, 0])  # scale 1.0 on frame 0
    assert (ramped[:, -1] - unguided[:, -1]).abs().max() > 1e-2  # scale 2.5 on frame 13


def test_images_use_the_minimum_scale():
    model = PixelMixer()
    ramp = sample_euler(model, IMAGE_SHAPE, num_steps=6, seed=7, guidance=Guidance(2.0, 5.0))
    constant = sample_euler(model, IMAGE_SHAPE, num_steps=6, seed=7, guidance=Guidance.constant(2.0))
    unguided = sample_euler(model, IMAGE_SHAPE, num_steps=6, seed=7)
    assert torch.equal(ramp, constant)
    assert (ramp - unguided).abs().max() > 1e-2


def test_guidance_ramps_are_svds():
    svd14 = guidance_scales(14, 1.0, 2.5)
    assert svd14.shape == (14,) and svd14[0] == 1.0 and svd14[-1] == 2.5
    torch.testing.assert_close(svd14.diff(), torch.full((13,), 1.5 / 13))
    assert torch.equal(Guidance.svd14().scales(14), svd14)
    svd25 = Guidance.svd25().scales(25)
    assert svd25[0] == 1.5 and svd25[-1] == 3.0 and svd25[12] == pytest.approx(2.25)
    assert torch.equal(Guidance.constant(3.0).scales(5), torch.full((5,), 3.0))
    assert guidance_scales(1, 1.0, 2.5).tolist() == [1.0]


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="min_scale"):
        Guidance(float("nan"), 2.0)
    with pytest.raises(ValueError, match="num_frames"):
        guidance_scales(0, 1.0, 2.0)
    with pytest.raises(ValueError, match="sigma_min"):
        sampling_sigmas(10, sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="num_steps"):
        sampling_sigmas(0)
    with pytest.raises(ValueError, match="shape"):
        sample_euler(PixelMixer(), (4, 6, 6), num_steps=2)
    with pytest.raises(ValueError, match="model_fn returned shape"):
        sample_euler(lambda x, c, cond: x[:, :2], IMAGE_SHAPE, num_steps=2)
    with pytest.raises(ValueError, match="guidance must be a Guidance"):
        sample_euler(PixelMixer(), IMAGE_SHAPE, num_steps=2, guidance=2.5)
