"""Multi-view PSNR / SSIM against scikit-image and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from svd_dag.evaluation.multiview_metrics import multiview_scores, psnr, ssim
from synth import texture


def _views(seed: int, count: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.stack([texture(seed + v, w=w, h=h) for v in range(count)])


def _noisy(images: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, std, size=images.shape)
    return np.clip(images + noise, 0, 255).astype(np.uint8)


def _skimage_ssim(x: np.ndarray, y: np.ndarray) -> float:
    return structural_similarity(
        x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )


def test_psnr_known_answer():
    target = np.full((16, 16, 3), 100, dtype=np.uint8)
    assert psnr(target + 1, target) == pytest.approx(20 * math.log10(255))  # MSE = 1
    assert psnr(target + 10, target, data_range=1.0) == pytest.approx(-20.0)  # MSE = 100


def test_psnr_matches_skimage_per_view_and_as_a_mean_over_views():
    true = _views(1, 3)
    pred = _noisy(true, std=[[[[4.0]]], [[[9.0]]], [[[20.0]]]])
    per_view = [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pred, true)]
    assert psnr(pred[0], true[0]) == pytest.approx(per_view[0], rel=1e-12)
    assert psnr(pred, true) == pytest.approx(np.mean(per_view), rel=1e-12)


def test_ssim_matches_skimage_gaussian_ssim():
    true = _views(10, 3, h=40, w=52)
    pred = _noisy(true, std=12.0, seed=1)
    pred[1] = np.roll(true[1], 3, axis=1)  # a structural change, not only noise
    per_view = [_skimage_ssim(p, t) for p, t in zip(pred, true)]
    assert ssim(pred[0], true[0]) == pytest.approx(per_view[0], abs=1e-9)
    assert ssim(pred, true) == pytest.approx(np.mean(per_view), abs=1e-9)
    assert 0 < min(per_view) < 0.99


def test_ssim_falls_as_noise_grows():
    true = _views(20, 1)[0]
    scores = [ssim(_noisy(true, std), true) for std in (2.0, 8.0, 32.0)]
    assert scores[0] > scores[1] > scores[2]


def test_identical_views_give_infinite_psnr_and_unit_ssim():
    views = _views(30, 2)
    assert psnr(views, views) == math.inf
    assert ssim(views, views) == pytest.approx(1.0, abs=1e-12)


def test_multiview_scores_report_means_and_view_count():
    true = _views(40, 4)
    pred = _noisy(true, std=6.0, seed=2)
    scores = multiview_scores(pred, true)
    assert set(scores) == {"psnr", "ssim", "num_views"}
    assert scores["num_views"] == 4
    per_view_psnr = [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pred, true)]
    assert scores["psnr"] == pytest.approx(np.mean(per_view_psnr))
    assert scores["ssim"] == pytest.approx(np.mean([_skimage_ssim(p, t) for p, t in zip(pred, true)]), abs=1e-9)


def test_bad_inputs_raise():
    views = _views(50, 2)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(views, views[:1])
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(views[0], views[0, :40])
    with pytest.raises(ValueError, match="uint8"):
        ssim(views.astype(np.float32), views.astype(np.float32))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(views[:, :8, :8], views[:, :8, :8])
    with pytest.raises(ValueError, match="RGB"):
        psnr(views[..., 0], views[..., 0])
    with pytest.raises(ValueError, match=r"\[V, H, W, 3\]"):
        multiview_scores(views[0], views[0])
