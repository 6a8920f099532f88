"""The training dataset: clips of a curated manifest, decoded by reference from their videos.

Each item is `num_frames` frames sampled at `target_fps` from a random offset inside the
clip, resized and centre-cropped to the stage's resolution, in [-1, 1], with the clip's
fps (effective, after striding), motion score and caption. A clip that fails to decode
yields None; `collate` drops it and the trainer counts it: never fatal.
"""

from __future__ import annotations

import io
import logging
import random
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from svd_dag.curation.media import VideoError
from svd_dag.storage import Store
from svd_dag.training.clip_reader import effective_fps, frame_indices, read_frames, resize_center_crop

log = logging.getLogger(__name__)


def read_manifest(uri: str, storage_options: dict | None = None) -> list[dict[str, Any]]:
    store = Store(uri.rsplit("/", 1)[0], storage_options)
    return pq.read_table(io.BytesIO(store.read_bytes(uri))).to_pylist()


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]], num_frames: int, target_fps: float, height: int, width: int,
                 raw_options: dict | None = None, seed: int = 0):
        self.rows = [r for r in rows if r["end_frame"] - r["start_frame"] >= num_frames]
        self.num_frames, self.target_fps = num_frames, target_fps
        self.height, self.width = height, width
        self.raw_options = raw_options or {}
        self.rng = random.Random(seed)
        self._stores: dict[str, Store] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _store(self, uri: str) -> Store:
        root = uri.rsplit("/", 1)[0]
        if root not in self._stores:
            self._stores[root] = Store(root, self.raw_options)
        return self._stores[root]

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        row = self.rows[i]
        try:
            idx = frame_indices(row["start_frame"], row["end_frame"], row["fps"], self.num_frames, self.target_fps,
                                offset=self.rng.randrange(0, row["end_frame"] - row["start_frame"]))
            frames = read_frames(self._store(row["video_uri"]), row["video_uri"], idx, row["fps"])
        except (VideoError, ValueError) as e:
            log.warning("skipping clip %s: %s", row["clip_id"], e)
            return None
        arr = np.stack([resize_center_crop(f, self.height, self.width) for f in frames])  # F, H, W, 3
        pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return {
            "pixels": pixels,
            "fps": effective_fps(row["fps"], idx),
            "motion_score": row.get("motion_score"),
            "caption": row.get("caption") or "",
            "clip_id": row["clip_id"],
        }


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    kept = [it for it in items if it is not None]
    out: dict[str, Any] = {"skipped": len(items) - len(kept), "size": len(kept)}
    if kept:
        out["pixels"] = torch.stack([it["pixels"] for it in kept])  # B, F, 3, H, W
        for key in ("fps", "motion_score", "caption", "clip_id"):
            out[key] = [it[key] for it in kept]
    return out
