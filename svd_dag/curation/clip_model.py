"""CLIP image/text embeddings with open_clip, from the model store or random-init.

Weights come from `<models>/clip/<arch>.{safetensors,pt,pth,bin}`. Without them the
architecture is built with a fixed seed and labelled `weights="random"`: the numbers
are then reproducible but carry no meaning, and lineage says so through `version`.
Loaded models are cached per process (one load per arch / weights file / seed / device /
dtype). A model is always built on the CPU, then moved to its `Placement` (device and
dtype); inputs are prepared on the CPU and each stacked batch moved to the model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from svd_dag.curation.devices import Placement, place_module, resolve
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
    device: str = "cpu"  # resolved Placement: where `model` lives and in which dtype
    dtype: str = "fp32"
    batch_frames: int = 32  # frames per forward pass in embed_images

    @property
    def torch_dtype(self):
        return Placement(self.device, self.dtype).torch_dtype


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
    device: str = "cpu"
    dtype: str = "fp32"
    batch_frames: int = 32

    @property
    def torch_dtype(self):
        return Placement(self.device, self.dtype).torch_dtype


@dataclass
class OpenClipBuild:
    """What `build_open_clip` returns; shared by CLIP and the CoCa captioner."""

    model: Any
    preprocess: Any
    tokenizer: Any
    weights: str
    version: str
    path: str | None


_CACHE: dict[tuple, ClipModel | ClipTextModel] = {}  # one entry per model and device/dtype
_VIEWS: dict[tuple, ClipModel | ClipTextModel] = {}  # the same model with another batch_frames
_CACHE_LOCK = threading.Lock()


def _cached_view(key: tuple, placement: Placement, build):
    """The cached model under `key` (device and dtype included), as a record carrying
    `placement.batch_frames`: models are shared across batch sizes, never re-placed."""
    with _CACHE_LOCK:
        view_key = key + (placement.batch_frames,)
        if view_key not in _VIEWS:
            if key not in _CACHE:
                _CACHE[key] = build()
            base = _CACHE[key]
            _VIEWS[view_key] = base if base.batch_frames == placement.batch_frames else dataclasses.replace(
                base, batch_frames=placement.batch_frames)
        return _VIEWS[view_key]


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
        return "pretrained", f"{arch}@sha256:{cached_file_sha256(path)[:12]}"
    return "random", f"{arch}@random-init-seed{seed}"


def file_key(path: str | None) -> tuple | None:
    """Cache key of a weight file: a file replaced in place is a different file."""
    if path is None:
        return None
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)  # multi-GB checkpoints: hash each file version once per process


def cached_file_sha256(path: str) -> str:
    """`file_sha256` of `path`, computed once per process for each version of the file."""
    return _sha256_of(*file_key(path))


def load_clip(arch: str, store: ModelStore | None, seed: int = 0, placement: Placement | None = None) -> ClipModel:
    """The CLIP model `arch` (e.g. "ViT-B-32") on `placement` (None: `Placement()`), cached per
    (arch, weights file, seed, resolved device, resolved dtype)."""
    p = resolve(placement)
    path = store.find_weights("clip", arch) if store is not None else None
    key = (arch, file_key(path), seed, p.device, p.dtype)

    def build() -> ClipModel:
        from svd_dag.curation.compat import import_open_clip

        built = build_open_clip(arch, "clip", store, seed)  # on the CPU, then placed
        embed_dim = int(import_open_clip().get_model_config(arch)["embed_dim"])
        return ClipModel(place_module(built.model, p), built.preprocess, built.tokenizer, arch, built.weights,
                         built.version, embed_dim, p.device, p.dtype, p.batch_frames)

    return _cached_view(key, p, build)


def load_clip_text(arch: str, store: ModelStore | None, seed: int = 0,
                   placement: Placement | None = None) -> ClipTextModel:
    """The text tower of CLIP `arch`, built on its own: with `clip/<arch>.*` in the store, its
    text weights (the same numbers CLIP's `encode_text` uses); without, a random init of its
    own seed (`<arch>-text@random-init-seed<n>`, not the full random model's text tower).
    Placed and cached like `load_clip`."""
    p = resolve(placement)
    path = store.find_weights("clip", arch) if store is not None else None
    key = ("text", arch, file_key(path), seed, p.device, p.dtype)

    def build() -> ClipTextModel:
        import torch

        from svd_dag.curation.compat import import_open_clip

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
        return ClipTextModel(place_module(tower.eval(), p), open_clip.get_tokenizer(arch), arch, weights, version,
                             int(cfg["embed_dim"]), p.device, p.dtype, p.batch_frames)

    return _cached_view(key, p, build)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
        _VIEWS.clear()


def _normalise(x) -> np.ndarray:
    x = x.float()  # bf16/fp16 outputs: normalise in fp32 (numpy has no bf16)
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float32)


def embed_images(m: ClipModel, frames_rgb: list[np.ndarray], batch_size: int | None = None) -> np.ndarray:
    """L2-normalised float32 image embeddings [N, D] of uint8 HxWx3 RGB frames.

    Frames are preprocessed on the CPU; each stacked batch of `batch_size` (None:
    `m.batch_frames`) frames is moved to the model's device and dtype for one forward pass."""
    import torch
    from PIL import Image

    batch_size = m.batch_frames if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out = [np.zeros((0, m.embed_dim), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(frames_rgb), batch_size):
            batch = torch.stack([m.preprocess(Image.fromarray(f)) for f in frames_rgb[i : i + batch_size]])
            batch = batch.to(device=m.device, dtype=m.torch_dtype, non_blocking=True)
            out.append(_normalise(m.model.encode_image(batch)))
    return np.concatenate(out)


def embed_texts(m: ClipModel | ClipTextModel, texts: list[str]) -> np.ndarray:
    """L2-normalised float32 text embeddings [N, D], from a whole CLIP or its text tower alone."""
    import torch

    if not texts:
        return np.zeros((0, m.embed_dim), np.float32)
    encode = m.model if isinstance(m, ClipTextModel) else m.model.encode_text
    with torch.inference_mode():
        return _normalise(encode(m.tokenizer(texts).to(m.device)))
