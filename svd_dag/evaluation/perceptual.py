"""Perceptual multi-view metrics: LPIPS (AlexNet, v0.1) and CLIP-S, from weights in the model store.

SVD-MV reports both next to PSNR/SSIM (`multiview_metrics.py`). Each is computed only when
its weights are in the model store; the loaders return None otherwise and the caller
reports the metric as not computed. Neither is ever computed with random weights.

LPIPS (Zhang et al. 2018), re-implemented here without the `lpips` package, as its
`LPIPS(net="alex", version="0.1")` forward with spatial averaging:
  uint8 RGB -> [-1, 1] -> ScalingLayer ((x - shift) / scale) -> AlexNet relu1..relu5
  (torchvision `alexnet().features` slices [0:2], [2:5], [5:8], [8:10], [10:12]) -> each
  feature map divided by (its L2 norm over channels + 1e-10) -> squared difference ->
  1x1 "lin" conv without bias -> spatial mean -> sum over the five layers.
Store files it relies on:
  lpips/alexnet.pth  a torchvision AlexNet state dict (e.g. alexnet-owt-7be5be79.pth); only
                     the `features.*` keys are used (conv weights/biases at 0, 3, 6, 8, 10);
                     `classifier.*` keys, if present, are ignored.
  lpips/alex.pth     the lpips package's `weights/v0.1/alex.pth`: exactly the five keys
                     `lin{k}.model.1.weight` (k = 0..4; index 1 because the package builds
                     each NetLinLayer as Sequential(Dropout, Conv2d)), shapes [1, C, 1, 1]
                     with C = 64, 192, 384, 256, 256.

CLIP-S: mean over views of the cosine similarity between the CLIP image embeddings of the
predicted and the true view (a value in [-1, 1], not scaled by 100), using the open_clip
helpers in `svd_dag.curation.clip_model` and `<models>/clip/<arch>.*`.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from svd_dag.curation.clip_model import ClipModel, embed_images, file_key, load_clip
from svd_dag.evaluation.multiview_metrics import view_batches
from svd_dag.model_store import ModelStore, file_sha256

LPIPS_ALEXNET_FILE = "lpips/alexnet.pth"
LPIPS_LIN_FILE = "lpips/alex.pth"
LPIPS_CHANNELS = (64, 192, 384, 256, 256)
ALEXNET_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # ends after relu1 .. relu5
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
NORMALISE_EPS = 1e-10
LPIPS_MIN_SIZE = 31  # smallest side for which AlexNet's relu5 map is at least 1x1




# --- LPIPS ---


@dataclass
class Lpips:
    """LPIPS-Alex v0.1 with weights read from the model store (see the module docstring)."""

    features: nn.Sequential  # torchvision AlexNet `features`
    lin_weights: list[torch.Tensor]  # five [1, C, 1, 1] tensors
    version: str  # "lpips-alex-v0.1@sha256:<alexnet file>+<lin file>", 12 hex digits each
    weights: str = "pretrained"  # loaded from the store; never built with random weights

    def _layer_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        shift = torch.tensor(SCALING_SHIFT).view(1, 3, 1, 1)
        scale = torch.tensor(SCALING_SCALE).view(1, 3, 1, 1)
        h = (images / 127.5 - 1.0 - shift) / scale
        outs = []
        for start, end in ALEXNET_SLICES:
            for layer in self.features[start:end]:
                h = layer(h)
            outs.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + NORMALISE_EPS))
        return outs

    def per_view(self, pred: np.ndarray, target: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """LPIPS of each view [V] for uint8 RGB [H, W, 3] or [V, H, W, 3] (float64)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pred, target = view_batches(pred, target, LPIPS_MIN_SIZE)
        out = []
        with torch.inference_mode():
            for i in range(0, len(pred), batch_size):
                x0 = torch.tensor(pred[i : i + batch_size]).permute(0, 3, 1, 2).float()
                x1 = torch.tensor(target[i : i + batch_size]).permute(0, 3, 1, 2).float()
                total = torch.zeros(len(x0), dtype=torch.float64)
                for f0, f1, w in zip(self._layer_features(x0), self._layer_features(x1), self.lin_weights):
                    total += F.conv2d((f0 - f1) ** 2, w).mean(dim=(1, 2, 3)).double()
                out.append(total.numpy())
        return np.concatenate(out)

    def distance(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Mean LPIPS over views (0 for identical images; lower is more similar)."""
        return float(self.per_view(pred, target).mean())


def _read_state_dict(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, pickled code
        raise ValueError(f"weight file {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weight file {path} is not a state dict of tensors")
    return state


def _load_alexnet_features(path: str) -> nn.Sequential:
    state = _read_state_dict(path)
    features_state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if not features_state:
        raise ValueError(f"weight file {path} has no 'features.*' keys: not a torchvision AlexNet state dict")
    with torch.device("meta"):  # no allocation or init: every parameter comes from the file
        features = torchvision.models.alexnet().features
    try:
        features.load_state_dict(features_state, strict=True, assign=True)
    except RuntimeError as exc:  # missing / unexpected keys, size mismatch
        raise ValueError(f"weight file {path} does not fit torchvision AlexNet features: {exc}") from exc
    return features.float().eval()


def _load_lin_weights(path: str) -> list[torch.Tensor]:
    state = _read_state_dict(path)
    expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weight file {path} is not LPIPS v0.1 alex lin weights: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"weight file {path}: {key} has shape {tuple(state[key].shape)}, expected {shape}")
    return [state[key].float() for key in expected]


@functools.lru_cache(maxsize=4)
def _load_lpips_cached(alexnet_key: tuple, lin_key: tuple) -> Lpips:
    alexnet_path, lin_path = alexnet_key[0], lin_key[0]
    features, lin_weights = _load_alexnet_features(alexnet_path), _load_lin_weights(lin_path)
    version = f"lpips-alex-v0.1@sha256:{file_sha256(alexnet_path)[:12]}+{file_sha256(lin_path)[:12]}"
    return Lpips(features, lin_weights, version)


_LPIPS_LOCK = threading.Lock()


def load_lpips(store: ModelStore | None) -> Lpips | None:
    """LPIPS-Alex v0.1 from `lpips/alexnet.pth` + `lpips/alex.pth`, or None if either is absent.

    A file that exists but cannot be read or does not fit raises ValueError naming it.
    Loaded once per process for each pair of file versions (path, size, mtime).
    """
    if store is None:
        return None
    alexnet_path, lin_path = store.find(LPIPS_ALEXNET_FILE), store.find(LPIPS_LIN_FILE)
    if alexnet_path is None or lin_path is None:
        return None
    with _LPIPS_LOCK:
        return _load_lpips_cached(file_key(alexnet_path), file_key(lin_path))


# --- CLIP-S ---


def load_clip_for_scoring(store: ModelStore | None, arch: str = "ViT-B-32") -> ClipModel | None:
    """The CLIP model `arch` with weights from `<models>/clip/<arch>.*`, or None if the store has none."""
    if store is None or store.find_weights("clip", arch) is None:
        return None
    return load_clip(arch, store)


def clip_similarity(pred: np.ndarray, target: np.ndarray, clip: ClipModel) -> float:
    """CLIP-S: mean over views of cos(CLIP(pred view), CLIP(true view)); 1.0 for identical images.

    Refuses a random-init model: a CLIP-S from random weights would carry no meaning.
    """
    if clip.weights != "pretrained":
        raise ValueError(f"CLIP-S needs pretrained CLIP weights, got weights={clip.weights!r} ({clip.version})")
    pred, target = view_batches(pred, target)
    pred_emb, target_emb = embed_images(clip, list(pred)), embed_images(clip, list(target))
    return float((pred_emb.astype(np.float64) * target_emb).sum(axis=1).mean())
