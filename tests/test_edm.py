"""EDM v-form preconditioning, loss and noise schedules against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from svd_dag.training.edm import (
    add_noise,
    denoise,
    edm_loss,
    edm_scalings,
    karras_sigmas,
    loss_weight,
    sample_training_sigmas,
    v_target,
)


def test_scalings_match_closed_forms():
    sigma = torch.tensor([1.0, 0.5, math.exp(4.0)], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
    s4 = math.exp(4.0)

    def expect(*values):
        return torch.tensor(values, dtype=torch.float64)

    torch.testing.assert_close(c_skip, expect(0.5, 0.8, 1 / (s4**2 + 1)))
    torch.testing.assert_close(c_out, expect(-1 / math.sqrt(2), -0.5 / math.sqrt(1.25), -s4 / math.sqrt(s4**2 + 1)))
    torch.testing.assert_close(c_in, expect(1 / math.sqrt(2), 1 / math.sqrt(1.25), 1 / math.sqrt(s4**2 + 1)))
    torch.testing.assert_close(c_noise, expect(0.0, 0.25 * math.log(0.5), 1.0))
    torch.testing.assert_close(loss_weight(sigma), expect(2.0, 5.0, (1 + s4**2) / s4**2))


def test_weight_times_c_out_squared_is_one():
    # Why the v-form is well conditioned: the weighted loss on D is a unit loss on F.
    sigma = torch.logspace(-3, 3, 50, dtype=torch.float64)
    _, c_out, _, _ = edm_scalings(sigma)
    torch.testing.assert_close(loss_weight(sigma) * c_out**2, torch.ones_like(sigma))


def _video_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 4, 2, 5, 6, generator=g, dtype=torch.float64)  # [B, F, C, H, W]
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    sigmas = torch.tensor([0.05, 1.0, 30.0], dtype=torch.float64)
    return x0, noise, sigmas


def test_oracle_network_gives_zero_loss():
    x0, noise, sigmas = _video_batch()
    seen = {}

    def oracle(scaled, c_noise):
        # Recover x and sigma from what the network is given, then solve D == x0 for F.
        sigma = torch.exp(4 * c_noise)
        c_skip, c_out, c_in, _ = edm_scalings(sigma)
        x = scaled / c_in.view(-1, 1, 1, 1, 1)
        seen["c_noise"] = c_noise
        return (x0 - c_skip.view(-1, 1, 1, 1, 1) * x) / c_out.view(-1, 1, 1, 1, 1)

    per_sample, loss = edm_loss(oracle, x0, sigmas, noise)
    assert per_sample.shape == (3,) and loss.shape == ()
    assert per_sample.abs().max() < 1e-20
    torch.testing.assert_close(seen["c_noise"], 0.25 * sigmas.log())
    torch.testing.assert_close(denoise(oracle, add_noise(x0, sigmas, noise), sigmas), x0)


def test_v_target_is_the_v_prediction_and_loss_is_unit_weight():
    x0, noise, sigmas = _video_batch(1)
    s = sigmas.view(-1, 1, 1, 1, 1)
    target = v_target(x0, sigmas, noise)
    torch.testing.assert_close(target, (noise - s * x0) / torch.sqrt(1 + s**2))

    delta = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    scale = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64).view(-1, 1, 1, 1, 1)
    per_sample, loss = edm_loss(lambda xin, cn: target + scale * delta, x0, sigmas, noise)
    expected = (scale * delta).pow(2).reshape(3, -1).mean(1)
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(loss, expected.mean())
    assert (per_sample > 0).all()


def test_one_sigma_per_video_broadcast():
    x0, noise, sigmas = _video_batch(3)
    noisy = add_noise(x0, sigmas, noise)
    for b in range(3):
        torch.testing.assert_close(noisy[b] - x0[b], sigmas[b] * noise[b])
    with pytest.raises(ValueError):
        edm_loss(lambda x, c: x, x0, sigmas[:, None].expand(3, 4), noise)


@pytest.mark.parametrize("p_mean,p_std", [(-1.2, 1.0), (0.5, 1.4), (1.0, 1.6)])
def test_training_sigma_statistics(p_mean, p_std):
    g = torch.Generator().manual_seed(0)
    sigmas = sample_training_sigmas(200_000, p_mean, p_std, generator=g)
    assert sigmas.shape == (200_000,) and (sigmas > 0).all()
    log_s = sigmas.double().log()
    # standard errors: p_std / sqrt(n) ~ 0.003 for the mean, smaller for the std
    assert abs(log_s.mean().item() - p_mean) < 0.015
    assert abs(log_s.std().item() - p_std) < 0.015


def test_training_sigmas_shape_and_reproducibility():
    a = sample_training_sigmas(4, -1.2, 1.0, generator=torch.Generator().manual_seed(7))
    b = sample_training_sigmas(4, -1.2, 1.0, generator=torch.Generator().manual_seed(7))
    assert a.shape == (4,) and a.dtype == torch.float32
    assert torch.equal(a, b) and len(set(a.tolist())) == 4


def test_karras_schedule():
    sigmas = karras_sigmas(25)
    assert sigmas.shape == (26,)
    assert sigmas[0].item() == pytest.approx(700.0, rel=1e-12)
    assert sigmas[-2].item() == pytest.approx(0.002, rel=1e-12)
    assert sigmas[-1].item() == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    hi, lo = 700.0 ** (1 / 7), 0.002 ** (1 / 7)
    assert sigmas[12].item() == pytest.approx((hi + 0.5 * (lo - hi)) ** 7, rel=1e-12)
    custom = karras_sigmas(10, sigma_min=0.01, sigma_max=80.0, rho=3.0)
    assert custom[0].item() == pytest.approx(80.0) and custom[-2].item() == pytest.approx(0.01)
    assert karras_sigmas(1).tolist() == [700.0, 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(0)
