"""CLIP image/text embeddings with open_clip, from the model store or random-init.

Weights come from `<models>/clip/<arch>.{safetensors,pt,pth,bin}`. Without them the
architecture is built with a fixed seed and labelled `weights="random"`: the numbers
are then reproducible but carry no meaning, and lineage says so through `version`.
Loaded models are cached per process (one load per arch / weights file / seed).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from svd_dag.model_store import ModelStore, file_sha256


@dataclass
class ClipModel:
    model: Any
    preprocess: Any
    tokenizer: Any
    arch: str
    weights: str  # "pretrained" | "random"
    version: str
    embed_dim: int


@dataclass
class OpenClipBuild:
    """What `build_open_clip` returns; shared by CLIP and the CoCa captioner."""

    model: Any
    preprocess: Any
    tokenizer: Any
    weights: str
    version: str
    path: str | None


_CACHE: dict[tuple, ClipModel] = {}
_CACHE_LOCK = threading.Lock()


def build_open_clip(arch: str, family: str, store: ModelStore | None, seed: int = 0) -> OpenClipBuild:
    """Build `arch` and load `<family>/<arch>.*` from the store, else seed a random init.

    A weight file that exists but cannot be read or does not fit the architecture
    raises ValueError naming the file: silently falling back to random weights would
    publish meaningless scores under a pretrained label.
    """
    import torch

    from svd_dag.curation.compat import import_open_clip, init_coca_text_projection

    open_clip = import_open_clip()
    if open_clip.get_model_config(arch) is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    path = store.find_weights(family, arch) if store is not None else None
    root, quiet = logging.getLogger(), _DropRandomInitWarning()
    if path is not None:
        root.addFilter(quiet)
    try:
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
            init_coca_text_projection(model)
    finally:
        root.removeFilter(quiet)
    if path is not None:
        try:
            open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
        except Exception as exc:  # unreadable, truncated, pickled code, wrong shapes, missing keys
            raise ValueError(
                f"weight file {path} cannot be loaded into open_clip {arch!r}: {type(exc).__name__}: {exc}"
            ) from exc
    model.eval()
    weights, version = open_clip_version(arch, path, seed)
    return OpenClipBuild(model, preprocess, open_clip.get_tokenizer(arch), weights, version, path)


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns "initialized randomly" when built with pretrained=None; when the
    stored weights are loaded right after, that line would mislead whoever reads the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def open_clip_version(arch: str, path: str | None, seed: int) -> tuple[str, str]:
    """(weights label, version) of `arch` built from `path`, or random-init with `seed`."""
    if path is not None:
        return "pretrained", f"{arch}@sha256:{_sha256_of(*file_key(path))[:12]}"
    return "random", f"{arch}@random-init-seed{seed}"


def file_key(path: str | None) -> tuple | None:
    """Cache key of a weight file: a file replaced in place is a different file."""
    if path is None:
        return None
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)  # multi-GB checkpoints: hash each file version once per process


def load_clip(arch: str, store: ModelStore | None, seed: int = 0) -> ClipModel:
    """The CLIP model `arch` (e.g. "ViT-B-32"), cached per (arch, weights file, seed)."""
    path = store.find_weights("clip", arch) if store is not None else None
    key = (arch, file_key(path), seed)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from svd_dag.curation.compat import import_open_clip

            built = build_open_clip(arch, "clip", store, seed)
            embed_dim = int(import_open_clip().get_model_config(arch)["embed_dim"])
            _CACHE[key] = ClipModel(
                built.model, built.preprocess, built.tokenizer, arch, built.weights, built.version, embed_dim
            )
        return _CACHE[key]


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _normalise(x) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float32)


def embed_images(m: ClipModel, frames_rgb: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """L2-normalised image embeddings [N, D] of uint8 HxWx3 RGB frames."""
    import torch
    from PIL import Image

    out = [np.zeros((0, m.embed_dim), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(frames_rgb), batch_size):
            batch = torch.stack([m.preprocess(Image.fromarray(f)) for f in frames_rgb[i : i + batch_size]])
            out.append(_normalise(m.model.encode_image(batch)))
    return np.concatenate(out)


def embed_texts(m: ClipModel, texts: list[str]) -> np.ndarray:
    """L2-normalised text embeddings [N, D]."""
    import torch

    if not texts:
        return np.zeros((0, m.embed_dim), np.float32)
    with torch.inference_mode():
        return _normalise(m.model.encode_text(m.tokenizer(texts)))
