"""Per-video work of the `clips` asset: one decode -> boundaries, clips, stored samples.

`process_video` runs inside an executor worker, so it takes and returns plain data. The
2-fps samples are written to `<storage>/samples/<video sha256>/<scan key>.parquet`; the
scan key hashes every setting that changes the result, so an unchanged video under
unchanged settings is never decoded again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from svd_dag.curation.cuts import CascadeConfig, PassConfig
from svd_dag.curation.media import VideoError
from svd_dag.curation.segments import MIN_SEGMENT_FRAMES
from svd_dag.curation.video_scan import SampleConfig, clips_from_boundaries, samples_to_parquet, scan_video
from svd_dag.storage import Store


@dataclass(frozen=True)
class ClipPassTask:
    uri: str
    sha256: str
    raw_root: str
    storage_root: str
    cascade: CascadeConfig
    sampling: SampleConfig
    min_clip_s: float
    scan_key: str
    raw_options: dict = dataclasses.field(default_factory=dict)
    storage_options: dict = dataclasses.field(default_factory=dict)
    threads: int = 0  # this video's CPU budget (0: all of the worker's); never changes the result
    min_segment_frames: int = MIN_SEGMENT_FRAMES  # shortest part decoded on its own; never changes the result


def scan_key(cascade: CascadeConfig, sampling: SampleConfig, min_clip_s: float, code_version: str) -> str:
    payload = {
        "cascade": dataclasses.asdict(cascade),
        "sampling": dataclasses.asdict(sampling),
        "min_clip_s": min_clip_s,
        "code": code_version,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cascade_from_dicts(passes: list[dict[str, Any]], **kwargs: Any) -> CascadeConfig:
    cfg = CascadeConfig(passes=tuple(PassConfig(**p) for p in passes), **kwargs)
    cfg.validate()
    return cfg


def process_video(task: ClipPassTask) -> dict[str, Any]:
    raw, out = Store(task.raw_root, task.raw_options), Store(task.storage_root, task.storage_options)
    scan = scan_video(raw, task.uri, task.cascade, task.sampling, task.threads, task.min_segment_frames)
    clips, dropped = clips_from_boundaries(scan, task.sha256, task.uri, task.min_clip_s)
    if not clips:
        raise VideoError(
            f"{task.uri}: no clip of at least {task.min_clip_s:g} s "
            f"({scan.frames_decoded} frames at {scan.info.fps:.3g} fps = {scan.frames_decoded / scan.info.fps:.2f} s"
            f"{f', {len(scan.boundaries)} cuts' if scan.boundaries else ''})"
        )
    samples_uri = out.write_bytes(f"samples/{task.sha256}/{task.scan_key}.parquet", samples_to_parquet(scan.samples))
    for c in clips:
        c.update(samples_uri=samples_uri, samples=task.sampling.label(), scan_key=task.scan_key)
    return {
        "clips": clips,
        "dropped_short": dropped,
        "frames_decoded": scan.frames_decoded,
        "decode_segments": scan.segments,
        "decode_note": scan.split_note,
        "boundaries": [{"frame": b.frame, "passes": b.passes} for b in scan.boundaries],
        "samples_uri": samples_uri,
    }
