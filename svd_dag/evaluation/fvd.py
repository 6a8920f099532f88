"""Frechet Video Distance following the StyleGAN-V protocol, with an explicit, logged protocol.

FVD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) between Gaussians fitted to I3D
features of real and generated clips (Unterthiner et al. 2018; StyleGAN-V's port of the
tf.hub I3D to TorchScript, `i3d_torchscript.pt`).

Feature extraction (`FvdProtocol`):
- the first `num_frames` (16) frames of every video; shorter videos are an error, never padded;
- every frame resized as a whole to `resize` (224x224): bilinear, align_corners=False, no
  antialiasing, aspect ratio NOT preserved and no crop (policy "resize");
- pixels mapped from uint8 [0, 255] to float [-1, 1], videos fed as [B, 3, T, 224, 224];
- features are the 400 Kinetics logits before the softmax. With the TorchScript model that is
  `model(videos, rescale=False, resize=False, return_features=True)`: StyleGAN-V and its
  fvd-comparison repo call it so ("raw features before the softmax layer"); we rescale and
  resize ourselves, so rescale/resize stay False;
- mean and biased covariance (divide by N, as StyleGAN-V's FeatureStats) of those features.

Without a TorchScript file the extractor falls back to a random-init I3D (`i3d.py`); its
scores are labelled `features="random"` / `weights="random"` and mean nothing about quality.
Always log `FvdProtocol.describe(...)` next to an FVD: numbers from different protocols,
feature networks or sample counts are not comparable.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from svd_dag.evaluation.i3d import NUM_KINETICS_CLASSES, build_random_i3d

SQRTM_EPS = 1e-6
MAX_IMAG_ON_DIAGONAL = 1e-3


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and biased covariance [D, D] (divided by N) of features [N, D]."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"features: need at least 2 samples for a covariance, got N={features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False, bias=True)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    If sqrtm(sigma1 @ sigma2) is not finite (near-singular product), both covariances get
    eps * I (eps 1e-6) and the root is retried. A root whose diagonal keeps an imaginary part
    above 1e-3 is a numerical failure and raises ValueError; otherwise the real part is used.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(mu, dtype=np.float64)) for mu in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(sigma, dtype=np.float64)) for sigma in (sigma1, sigma2))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mu1 and mu2 must be vectors of one length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must be [{dim}, {dim}] to match the means, got {sigma.shape}")

    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(dim) * SQRTM_EPS
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("frechet_distance: sqrtm(sigma1 @ sigma2) is not finite even with eps * I added")
    if np.iscomplexobj(covmean):
        max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if max_imag > MAX_IMAG_ON_DIAGONAL:
            raise ValueError(f"frechet_distance: sqrtm(sigma1 @ sigma2) has imaginary component {max_imag:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclass(frozen=True)
class FvdProtocol:
    """How clips become I3D inputs; see the module docstring for each step."""

    num_frames: int = 16
    resize: tuple[int, int] = (224, 224)  # (height, width)
    resize_policy: str = "resize"  # whole frame, bilinear, aspect not kept, no crop
    feature: str = "logits"  # the 400 pre-softmax Kinetics logits

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"FvdProtocol.num_frames must be >= 1, got {self.num_frames}")
        if len(self.resize) != 2 or min(self.resize) < 1:
            raise ValueError(f"FvdProtocol.resize must be (height, width) >= 1, got {self.resize}")
        if self.resize_policy != "resize":
            raise ValueError(f"FvdProtocol.resize_policy: only 'resize' is implemented, got {self.resize_policy!r}")
        if self.feature != "logits":
            raise ValueError(f"FvdProtocol.feature: only 'logits' is implemented, got {self.feature!r}")

    def describe(self, n_real: int, n_generated: int, features: str) -> dict[str, object]:
        """Flat dict to log with every FVD value."""
        return {
            "num_frames": self.num_frames,
            "resolution": f"{self.resize[0]}x{self.resize[1]}",
            "resize_policy": f"{self.resize_policy} (whole frame, bilinear, aspect not kept, no crop)",
            "feature": f"{self.feature} ({NUM_KINETICS_CLASSES}-d, pre-softmax)",
            "n_real": int(n_real),
            "n_generated": int(n_generated),
            "features": features,
        }


class I3dFeatureExtractor:
    """I3D logits for uint8 videos: StyleGAN-V's TorchScript model, or a random-init I3D.

    `weights` is "pretrained" for the TorchScript file and "random" for the fallback;
    `features` ("i3d-torchscript" | "random") is the label FVD results carry.
    """

    def __init__(
        self,
        torchscript_path: str | os.PathLike | None = None,
        protocol: FvdProtocol | None = None,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.protocol = protocol or FvdProtocol()
        self.batch_size = batch_size
        self.device = torch.device(device)
        if torchscript_path is None:
            self.model = build_random_i3d(seed).to(self.device)
            self.weights, self.features = "random", "random"
        else:
            self.model = _load_torchscript(os.fspath(torchscript_path), self.device)
            self.weights, self.features = "pretrained", "i3d-torchscript"

    def extract(self, videos: np.ndarray, protocol: FvdProtocol | None = None) -> np.ndarray:
        """uint8 videos [N, T, H, W, 3] -> float64 logits [N, 400], in batches."""
        protocol = protocol or self.protocol
        videos = np.asarray(videos)
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"videos must be uint8 [N, T, H, W, 3], got shape {videos.shape}")
        if videos.dtype != np.uint8:
            raise ValueError(f"videos must be uint8 [N, T, H, W, 3], got dtype {videos.dtype}")
        if videos.shape[1] < protocol.num_frames:
            raise ValueError(
                f"videos have {videos.shape[1]} frames; the FVD protocol needs at least {protocol.num_frames}"
            )
        outputs = []
        with torch.inference_mode():
            for start in range(0, videos.shape[0], self.batch_size):
                clip = _to_i3d_input(videos[start : start + self.batch_size], protocol).to(self.device)
                outputs.append(self._logits(clip).double().cpu().numpy())
        if not outputs:
            return np.zeros((0, NUM_KINETICS_CLASSES))
        return np.concatenate(outputs, axis=0)

    def _logits(self, clip: torch.Tensor) -> torch.Tensor:
        if self.weights == "random":
            logits = self.model(clip)
        else:
            logits = self.model(clip, rescale=False, resize=False, return_features=True)
        if logits.ndim != 2 or logits.shape[1] != NUM_KINETICS_CLASSES:
            raise ValueError(f"I3D returned shape {tuple(logits.shape)}, expected [B, {NUM_KINETICS_CLASSES}]")
        return logits


def _load_torchscript(path: str, device: torch.device) -> torch.jit.ScriptModule:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"I3D TorchScript file not found: {path}")
    try:
        with warnings.catch_warnings():  # the published model is TorchScript; jit's deprecation is moot
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
            return torch.jit.load(path, map_location=device).eval()
    except Exception as error:  # torch raises RuntimeError / pickle errors for non-TorchScript files
        raise ValueError(f"I3D TorchScript file {path} could not be loaded: {error}") from error


def _to_i3d_input(videos: np.ndarray, protocol: FvdProtocol) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float32 [B, 3, num_frames, h, w] in [-1, 1] per the protocol."""
    clip = torch.from_numpy(np.ascontiguousarray(videos[:, : protocol.num_frames]))
    b, t, h, w, c = clip.shape
    frames = clip.reshape(b * t, h, w, c).permute(0, 3, 1, 2).float()
    if (h, w) != tuple(protocol.resize):
        frames = F.interpolate(
            frames, size=tuple(protocol.resize), mode="bilinear", align_corners=False, antialias=False
        )
    frames = frames / 127.5 - 1.0
    return frames.reshape(b, t, c, *protocol.resize).permute(0, 2, 1, 3, 4).contiguous()


def compute_fvd(
    real_videos: np.ndarray,
    fake_videos: np.ndarray,
    extractor: I3dFeatureExtractor,
    protocol: FvdProtocol | None = None,
) -> dict[str, object]:
    """FVD between two uint8 video sets [N, T, H, W, 3], with the protocol's description."""
    protocol = protocol or extractor.protocol
    real_features = extractor.extract(real_videos, protocol)
    fake_features = extractor.extract(fake_videos, protocol)
    mu_real, sigma_real = feature_stats(real_features)
    mu_fake, sigma_fake = feature_stats(fake_features)
    return {
        "fvd": frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake),
        "n_real": len(real_features),
        "n_fake": len(fake_features),
        "weights": extractor.weights,
        **protocol.describe(len(real_features), len(fake_features), extractor.features),
    }
