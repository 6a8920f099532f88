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
class ClipTextModel:
    """CLIP's text tower alone (for caption similarity): a third of ViT-B-32's weights, a
    fifth of ViT-L-14's. `model` maps tokens to projected text features, as CLIP's
    `encode_text` does."""

    model: Any
    tokenizer: Any
    arch: str
    weights: str
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


def load_clip_text(arch: str, store: ModelStore | None, seed: int = 0) -> ClipTextModel:
    """The text tower of CLIP `arch`, built on its own: with `clip/<arch>.*` in the store, its
    text weights (the same numbers CLIP's `encode_text` uses); without, a random init of its
    own seed (`<arch>-text@random-init-seed<n>`, not the full random model's text tower)."""
    import torch

    from svd_dag.curation.compat import import_open_clip

    path = store.find_weights("clip", arch) if store is not None else None
    key = ("text", arch, file_key(path), seed)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        open_clip = import_open_clip()
        cfg = open_clip.get_model_config(arch)
        if cfg is None or "text_cfg" not in cfg:
            raise ValueError(f"unknown open_clip CLIP architecture {arch!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tower = open_clip.model._build_text_tower(cfg["embed_dim"], cfg["text_cfg"],
                                                      quick_gelu=cfg.get("quick_gelu", False))
        if path is not None:
            try:
                state = open_clip.factory.load_state_dict(path)
                tower.load_state_dict({k: v for k, v in state.items() if not k.startswith("visual.")
                                       and k not in ("logit_scale", "logit_bias")}, strict=True)
            except Exception as exc:  # unreadable, wrong shapes, missing keys: never a silent random tower
                raise ValueError(f"weight file {path} cannot be loaded into the text tower of open_clip {arch!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        weights, version = open_clip_version(arch, path, seed)
        if path is None:
            version = f"{arch}-text@random-init-seed{seed}"
        _CACHE[key] = ClipTextModel(tower.eval(), open_clip.get_tokenizer(arch), arch, weights, version,
                                    int(cfg["embed_dim"]))
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


def embed_texts(m: ClipModel | ClipTextModel, texts: list[str]) -> np.ndarray:
    """L2-normalised text embeddings [N, D], from a whole CLIP or its text tower alone."""
    import torch

    if not texts:
        return np.zeros((0, m.embed_dim), np.float32)
    encode = m.model if isinstance(m, ClipTextModel) else m.model.encode_text
    with torch.inference_mode():
        return _normalise(encode(m.tokenizer(texts)))
