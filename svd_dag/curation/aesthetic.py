"""LAION aesthetic predictor heads over L2-normalised CLIP image embeddings.

Two published families: the v1 linear heads (`sa_0_4_vit_*_linear.pth`, nn.Linear(D, 1),
one per CLIP arch) and the "improved" v2 MLP for ViT-L/14
(`sac+logos+ava1-l14-linearMSE.pth`), preferred when present. Files are looked up in
the model store under `aesthetic/<file>` and, for the shared weights folder that the
store may carry as a fallback, under `laion-aesthetic/<file>`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from svd_dag.model_store import ModelStore, file_sha256

MLP_V2_FILE = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_FILES: dict[str, tuple[str, ...]] = {
    "ViT-L-14": (MLP_V2_FILE, "sa_0_4_vit_l_14_linear.pth"),
    "ViT-B-32": ("sa_0_4_vit_b_32_linear.pth",),
    "ViT-B-16": ("sa_0_4_vit_b_16_linear.pth",),
}
CLIP_EMBED_DIMS = {"ViT-L-14": 768, "ViT-B-32": 512, "ViT-B-16": 512}
STORE_DIRS = ("aesthetic", "laion-aesthetic")


@dataclass
class AestheticHead:
    module: Any
    file: str
    kind: str  # "mlp_v2" | "linear"
    version: str
    embed_dim: int
    sha256: str = ""  # the head file's, in full ("" for a random head)


def _mlp_v2(dim: int):
    from torch import nn

    # Same layer indices as the published state dict (layers.0, .2, .4, .6, .7);
    # the dropouts are no-ops in eval mode but keep the key names aligned.
    return nn.Sequential(
        nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )


def _build(file: str, path: str):
    import torch
    from torch import nn

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"aesthetic head {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"aesthetic head {path} is not a state dict (got {type(state).__name__})")
    if file == MLP_V2_FILE:
        key, kind = "layers.0.weight", "mlp_v2"
    else:
        key, kind = "weight", "linear"
    if key not in state or getattr(state[key], "ndim", 0) != 2:
        raise ValueError(f"aesthetic head {path} has no 2-D {key!r}; keys: {sorted(state)[:8]}")
    dim = int(state[key].shape[1])
    if kind == "mlp_v2":
        module = nn.Sequential(OrderedDict(layers=_mlp_v2(dim)))  # keys "layers.<i>.*"
    else:
        module = nn.Linear(dim, 1)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"aesthetic head {path} does not match a {kind} head: {exc}") from exc
    return module.eval(), kind, dim


def load_aesthetic_head(arch: str, store: ModelStore) -> AestheticHead:
    """The best published head for CLIP `arch` that the store holds."""
    files = HEAD_FILES.get(arch)
    if files is None:
        raise FileNotFoundError(f"no LAION aesthetic head is published for CLIP {arch!r}; known: {sorted(HEAD_FILES)}")
    looked = []
    for file in files:
        for folder in STORE_DIRS:
            rel = f"{folder}/{file}"
            path = store.find(rel)
            if path is None:
                looked += [store.describe(rel)] + [os.path.join(d, rel) for d in store.extra_local_dirs]
                continue
            module, kind, dim = _build(file, path)
            expected = CLIP_EMBED_DIMS[arch]
            if dim != expected:
                raise ValueError(f"aesthetic head {path} takes {dim}-d embeddings but CLIP {arch} gives {expected}")
            sha = file_sha256(path)
            return AestheticHead(module, file, kind, f"{file}@sha256:{sha[:12]}", dim, sha)
    raise FileNotFoundError(f"no LAION aesthetic head for CLIP {arch}: looked for {', '.join(looked)}")


def random_head(embed_dim: int, seed: int = 0) -> AestheticHead:
    """A random-init linear head, for when no published head is available: its scores are
    noise and every row it writes says weights=random."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = torch.nn.Linear(embed_dim, 1)
    return AestheticHead(module.eval(), "random-linear", "linear", f"linear{embed_dim}@random-init-seed{seed}", embed_dim)


def score_embeddings(head: AestheticHead, emb: np.ndarray) -> np.ndarray:
    """Aesthetic score per row of `emb` [N, D]; rows are re-normalised first."""
    import torch

    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] != head.embed_dim:
        raise ValueError(f"{head.file} scores [N, {head.embed_dim}] embeddings, got shape {emb.shape}")
    x = torch.from_numpy(emb)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    with torch.inference_mode():
        return head.module(x).reshape(-1).numpy().astype(np.float32)
