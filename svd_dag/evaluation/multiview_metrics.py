"""Pixel metrics for novel-view synthesis: PSNR and SSIM between predicted and true views.

Inputs are uint8 RGB images [H, W, 3] or view batches [V, H, W, 3]; a batch scores the mean
over views. SSIM is Wang et al. (2004): an 11-tap Gaussian window (sigma 1.5, truncated at
3.5 sigma), K1 = 0.01, K2 = 0.03, population (not sample) statistics, per channel then
averaged over channels, with the window's 5-pixel border left out of the mean (windows
there reach into reflected padding). PSNR of identical images is +inf (zero error); a
batch containing one identical view therefore has mean PSNR +inf too.

LPIPS and CLIP-S (also reported by multi-view SVD) need pretrained network weights from the
model store and are not computed here.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: the 11x11 window of Wang et al.
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def view_batches(pred: np.ndarray, target: np.ndarray, min_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes/dtypes (uint8 RGB [H, W, 3] or [V, H, W, 3], equal shapes, at least one view
    of at least `min_size` pixels a side) and return both as uint8 [V, H, W, 3]."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if pred.ndim not in (3, 4) or pred.shape[-1] != 3:
        raise ValueError(f"images must be RGB [H, W, 3] or [V, H, W, 3], got shape {pred.shape}")
    for name, image in (("pred", pred), ("target", target)):
        if image.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8, got dtype {image.dtype}")
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    if pred.shape[0] == 0:
        raise ValueError("pred and target hold no views")
    if min(pred.shape[1:3]) < min_size:
        raise ValueError(f"images must be at least {min_size}x{min_size}, got {pred.shape[1]}x{pred.shape[2]}")
    return pred, target


def _as_view_batch(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = view_batches(pred, target)
    return pred.astype(np.float64), target.astype(np.float64)


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, mean over views; +inf for identical images."""
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    pred, target = _as_view_batch(pred, target)
    mse = ((pred - target) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        per_view = 10.0 * np.log10(data_range**2 / mse)
    return float(per_view.mean())


def _ssim_channel(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    def blur(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    border = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    return float(ssim_map[border:-border, border:-border].mean())


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Gaussian-window SSIM (Wang et al. 2004), averaged over channels, then over views."""
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    pred, target = _as_view_batch(pred, target)
    window = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
    if min(pred.shape[1:3]) < window:
        raise ValueError(f"images must be at least {window}x{window} for SSIM, got {pred.shape[1]}x{pred.shape[2]}")
    per_view = [
        np.mean([_ssim_channel(p[..., c], t[..., c], data_range) for c in range(3)]) for p, t in zip(pred, target)
    ]
    return float(np.mean(per_view))


def multiview_scores(pred_views: np.ndarray, true_views: np.ndarray) -> dict[str, float | int]:
    """PSNR and SSIM of predicted against true views [V, H, W, 3] uint8, each a mean over views.

    LPIPS and CLIP-S are not part of this dict: they need pretrained weights from the model
    store (`svd_dag.evaluation.perceptual`); `multiview_eval` adds them where those exist.
    """
    pred_views, true_views = np.asarray(pred_views), np.asarray(true_views)
    if pred_views.ndim != 4:
        raise ValueError(f"pred_views must be [V, H, W, 3], got shape {pred_views.shape}")
    return {
        "psnr": psnr(pred_views, true_views),
        "ssim": ssim(pred_views, true_views),
        "num_views": int(pred_views.shape[0]),
    }
