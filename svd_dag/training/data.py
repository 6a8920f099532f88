"""The training dataset: clips of a curated manifest, decoded from their shards or by reference.

A row that carries shard columns (a `clip_shards` index) is read from its shard: one ranged
read of its mp4 member, decoded in memory, at the shard's (possibly reduced) resolution.
Any other row is decoded by reference from its raw video.

Each item is `num_frames` frames sampled at `target_fps` from a random offset inside the
clip, resized and centre-cropped to the stage's resolution, in [-1, 1], with the clip's
fps (effective, after striding), motion score and caption. A clip that fails to decode
yields a skip marker; `collate` drops it and the trainer records it (`clip_usage`): never
fatal. A raw video that no longer holds the bytes the manifest names (deleted, or replaced
in place) is fatal: training on other bytes than the dataset version recorded would make
its lineage false.
"""

from __future__ import annotations

import io
import logging
import os
import random
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from svd_dag.curation.media import VideoError, read_frames
from svd_dag.curation.shards import read_clip_frames
from svd_dag.storage import Store, sha256_of
from svd_dag.training.clip_reader import effective_fps, frame_indices, resize_center_crop

log = logging.getLogger(__name__)


class RawVideoChangedError(RuntimeError):
    """A by-reference read found other bytes (or no file) where the manifest names a raw video."""


def read_manifest(uri: str, storage_options: dict | None = None) -> list[dict[str, Any]]:
    store = Store(uri.rsplit("/", 1)[0], storage_options)
    return pq.read_table(io.BytesIO(store.read_bytes(uri))).to_pylist()


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]], num_frames: int, target_fps: float, height: int, width: int,
                 raw_options: dict | None = None, seed: int = 0, shard_options: dict | None = None):
        self.all_rows = rows
        self.rows = [r for r in rows if r["end_frame"] - r["start_frame"] >= num_frames]
        # Refused up front, with the reason recorded in clips_used.parquet.
        self.excluded = {r["clip_id"]: f"too short: {r['end_frame'] - r['start_frame']} frames, {num_frames} needed"
                         for r in rows if r["end_frame"] - r["start_frame"] < num_frames}
        self._verified: dict[str, str] = {}  # raw video uri -> sha256 read from it (once per process)
        self.num_frames, self.target_fps = num_frames, target_fps
        self.height, self.width = height, width
        self.raw_options = raw_options or {}
        self.shard_options = self.raw_options if shard_options is None else shard_options
        self.rng = random.Random(seed)
        self._stores: dict[str, Store] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _store(self, uri: str, options: dict) -> Store:
        root = uri.rsplit("/", 1)[0]
        if root not in self._stores:
            self._stores[root] = Store(root, options)
        return self._stores[root]

    def verify_reference(self, row: dict[str, Any]) -> None:
        """The raw video still holds the bytes the manifest names (hashed once per process)."""
        uri, want = row["video_uri"], row.get("video_sha256")
        if not want:
            return
        if uri not in self._verified:
            store = self._store(uri, self.raw_options)
            if not store.exists(uri):
                raise RawVideoChangedError(f"{uri}: raw video of clip {row['clip_id']} is gone; the dataset version "
                                           f"names sha256 {want}")
            self._verified[uri] = sha256_of(store, uri)
        if self._verified[uri] != want:
            raise RawVideoChangedError(f"{uri}: raw video changed since it was inventoried: sha256 is now "
                                       f"{self._verified[uri]}, the dataset version names {want} (clip {row['clip_id']}); "
                                       "re-run raw_videos and the curation before training on it")

    def _frames(self, row: dict[str, Any], offset: int) -> tuple[np.ndarray, list[int]] | str:
        """(frames, indices), or the reason the clip was skipped."""
        try:
            idx = frame_indices(row["start_frame"], row["end_frame"], row["fps"], self.num_frames, self.target_fps,
                                offset=offset)
            if row.get("shard_uri"):
                frames = read_clip_frames(self._store(row["shard_uri"], self.shard_options), row, idx)
            else:
                self.verify_reference(row)
                frames = read_frames(self._store(row["video_uri"], self.raw_options), row["video_uri"], idx, row["fps"])
        except (VideoError, ValueError) as e:
            log.warning("skipping clip %s: %s", row["clip_id"], e)
            return f"decode failed: {e}"
        return np.stack([resize_center_crop(f, self.height, self.width) for f in frames]), idx  # F, H, W, 3

    def reference(self, i: int) -> tuple[str, np.ndarray, float | None, str] | None:
        """(clip_id, uint8 frames from the clip's start, no elevation, caption) in clip_id order:
        fixed sample inputs."""
        row = sorted(self.rows, key=lambda r: r["clip_id"])[i]
        got = self._frames(row, 0)
        return None if isinstance(got, str) else (row["clip_id"], got[0], None, row.get("caption") or "")

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        row = self.rows[i]
        got = self._frames(row, self.rng.randrange(0, row["end_frame"] - row["start_frame"]))
        if isinstance(got, str):
            return {"skip": got, "clip_id": row["clip_id"]}
        arr, idx = got
        pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return {
            "pixels": pixels,
            "fps": effective_fps(row["fps"], idx),
            "motion_score": row.get("motion_score"),
            "caption": row.get("caption") or "",
            "clip_id": row["clip_id"],
        }


# An orbit has no frame rate and no motion score: multi-view items carry these constants
# (diffusers' default fps, bucket 0), which the model sees on every item and so learns to ignore.
ORBIT_FPS = 7.0


def orbit_view_indices(views: int, num_frames: int) -> list[int]:
    """`num_frames` views spread evenly over an orbit of `views`, starting at the first."""
    return [int(k * views / num_frames) for k in range(num_frames)]


class OrbitDataset(torch.utils.data.Dataset):
    """Objects of an orbit-render folder (svd_dag.training.orbits): `num_frames` views spread
    evenly over each orbit, resized/cropped like clips, with the orbit's camera elevation."""

    excluded: dict[str, str] = {}

    def __init__(self, orbits_uri: str, num_frames: int, height: int, width: int, options: dict | None = None,
                 exclude: list[str] | None = None):
        from svd_dag.training.orbits import list_orbit_objects

        self.store = Store(orbits_uri, options)
        held_out = {os.path.basename(u.rstrip("/")) for u in exclude or []}
        self.objects = [u for u in list_orbit_objects(self.store, "") if os.path.basename(u.rstrip("/")) not in held_out]
        self.num_frames, self.height, self.width = num_frames, height, width

    def __len__(self) -> int:
        return len(self.objects)

    def reference(self, i: int) -> tuple[str, np.ndarray, float | None, str] | None:
        """(object id, uint8 views, elevation, no caption): fixed sample inputs, in object order."""
        got = self._views(i)
        return None if got is None else (got[0].object_id, got[1], float(got[0].elevation_deg), "")

    def _views(self, i: int):
        from svd_dag.training.orbits import OrbitFormatError, read_orbit_folder

        try:
            orbit = read_orbit_folder(self.store, self.objects[i])
        except OrbitFormatError as e:
            log.warning("skipping orbit %s: %s", self.objects[i], e)
            return None
        views = len(orbit.frames)
        if views < self.num_frames:
            log.warning("skipping orbit %s: %d views, %d needed", self.objects[i], views, self.num_frames)
            return None
        idx = orbit_view_indices(views, self.num_frames)
        return orbit, np.stack([resize_center_crop(orbit.frames[j], self.height, self.width) for j in idx])

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        got = self._views(i)
        if got is None:
            return {"skip": "unreadable orbit or too few views", "clip_id": os.path.basename(self.objects[i].rstrip("/"))}
        orbit, arr = got
        return {
            "pixels": torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0,
            "fps": ORBIT_FPS,
            "motion_score": None,
            "caption": "",
            "clip_id": orbit.object_id,
            "elevation_deg": float(orbit.elevation_deg),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [it for it in items if "skip" not in it]
    out: dict[str, Any] = {"skipped": len(items) - len(kept), "size": len(kept),
                           "skipped_items": [(it["clip_id"], it["skip"]) for it in items if "skip" in it]}
    if kept:
        out["pixels"] = torch.stack([it["pixels"] for it in kept])  # B, F, 3, H, W
        for key in ("fps", "motion_score", "caption", "clip_id", "elevation_deg"):
            if key in kept[0]:
                out[key] = [it[key] for it in kept]
    return out


def dataset_for(cfg) -> torch.utils.data.Dataset:
    """The dataset a TrainConfig names: orbit renders (multi-view) or a clip manifest."""
    if cfg.task == "multiview":
        return OrbitDataset(cfg.orbits_uri, cfg.num_frames, cfg.height, cfg.width, cfg.storage_options,
                            exclude=cfg.orbits_exclude)
    rows = read_manifest(cfg.manifest_uri, cfg.storage_options)
    return ClipDataset(rows, cfg.num_frames, cfg.target_fps, cfg.height, cfg.width, cfg.raw_options, cfg.seed,
                       shard_options=cfg.storage_options)


class EpochShuffle(torch.utils.data.Sampler):
    """A new order each epoch that depends only on (seed, epoch), so a resumed run can replay
    the epoch it stopped in and skip the batches it had already trained on. The loader
    (accelerate's) calls `set_epoch`."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())

    def __len__(self) -> int:
        return self.size
