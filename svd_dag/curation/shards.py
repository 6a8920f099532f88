"""Clip shards: the kept clips cut out of their videos, encoded for training, packed in tars.

Curation works on references (a clip is a frame range of its raw video); only clips that
survived filtering are transcoded, here. Each clip becomes an H.264 mp4 at its native fps
(clip frame i is source frame start_frame + i), scaled down to fit `max_height`, and goes
into a WebDataset-style tar shard as `<clip_id>.mp4` + `<clip_id>.json`. The byte offset
and size of every mp4 member are recorded, so a reader fetches one clip with one ranged
read instead of opening the tar. Shards are append-only: new clips go into new shard files,
and a clip already encoded under the same encode key is never transcoded again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import posixpath
import re
import tarfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import av
import numpy as np
import pyarrow as pa
from av.video.reformatter import VideoReformatter

from svd_dag.curation.executor import Outcome
from svd_dag.curation.media import VideoError, clip_ref, decode_range, open_video, read_frames_from_bytes, scaled_size
from svd_dag.storage import Store

CODEC, PIX_FMT = "libx264", "yuv420p"
# Bump when a change here alters the encoded bytes (cut points, scaling, codec options). The
# encode key hashes this, not the source: re-transcoding a whole corpus because a comment
# changed would cost days of compute on a real dataset.
ENCODING_VERSION = 1
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
CLIPS_PER_TASK = 4  # clips of one video per unit of executor work
TASKS_PER_BATCH = 16  # bounds the encoded bytes held in memory before they are packed

# Shard reference columns, shared by the `clip_shards` catalog rows and the shard index.
SHARD_SCHEMA = pa.schema([
    ("encode_key", pa.string()),
    ("shard_uri", pa.string()),
    ("shard_member", pa.string()),
    ("shard_offset", pa.int64()),
    ("shard_size", pa.int64()),
    ("shard_sha256", pa.string()),
    ("shard_frames", pa.int64()),
    ("shard_fps", pa.float64()),
    ("shard_width", pa.int32()),
    ("shard_height", pa.int32()),
])


@dataclass(frozen=True)
class EncodeSettings:
    max_height: int = 576
    crf: int = 20
    preset: str = "fast"

    def validate(self) -> "EncodeSettings":
        if self.max_height < 2:
            raise ValueError(f"max_height must be >= 2, got {self.max_height}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51] (libx264), got {self.crf}")
        if self.preset not in X264_PRESETS:  # caught here, not as one quarantined clip per kept clip
            raise ValueError(f"preset must be one of {X264_PRESETS}, got {self.preset!r}")
        return self

    def key(self) -> str:
        """Identity of an encoding: same settings and encoding version -> same frames, reusable."""
        payload = {**dataclasses.asdict(self), "codec": CODEC, "pix_fmt": PIX_FMT, "version": ENCODING_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def output_size(width: int, height: int, max_height: int) -> tuple[int, int]:
    """(w, h) fitting `max_height`, aspect kept, both even; never larger than the source."""
    h, w = scaled_size(height, width, max_height - max_height % 2)  # scaled_size bounds its first argument
    return w, h


@dataclass
class EncodedClip:
    clip_id: str
    mp4: bytes
    frames: int
    fps: float
    width: int
    height: int
    sha256: str


def transcode_clip(store: Store, clip: dict[str, Any], settings: EncodeSettings) -> EncodedClip:
    """Frames [start_frame, end_frame) of the clip's video as an in-memory H.264 mp4."""
    uri, start, end, fps = clip["video_uri"], clip["start_frame"], clip["end_frame"], float(clip["fps"])
    rate = Fraction(fps).limit_denominator(1001)  # 29.97... -> 30000/1001, as the source declares it
    buf, n, size = io.BytesIO(), 0, None
    with open_video(store, uri) as source, av.open(buf, "w", format="mp4") as out:
        reformat, stream = VideoReformatter(), None
        for idx, frame in decode_range(source, start, end - 1, fps, uri):
            if idx != start + n:
                raise VideoError(f"{uri}: frame {start + n} did not decode (next decoded: {idx})")
            if stream is None:
                size = output_size(frame.width, frame.height, settings.max_height)
                stream = _video_stream(out, rate, size, settings, fps)
            small = reformat.reformat(frame, width=size[0], height=size[1], format=PIX_FMT, threads=1)
            small.pts, small.time_base = n, 1 / rate
            out.mux(stream.encode(small))
            n += 1
        if stream is not None:
            out.mux(stream.encode(None))
    if n < end - start:
        raise VideoError(f"{uri}: frames {start + n}-{end - 1} did not decode")
    data = buf.getvalue()
    return EncodedClip(clip["clip_id"], data, n, fps, size[0], size[1], hashlib.sha256(data).hexdigest())


def _video_stream(out, rate: Fraction, size: tuple[int, int], settings: EncodeSettings, fps: float):
    stream = out.add_stream(CODEC, rate=rate)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], PIX_FMT
    stream.options = {"crf": str(settings.crf), "preset": settings.preset}
    # A keyframe every second: a reader starting mid-clip decodes at most a second it throws away.
    stream.codec_context.gop_size = max(1, int(round(fps)))
    return stream


@dataclass(frozen=True)
class ShardTask:
    """Picklable unit of executor work: a few clips of one video."""

    raw_root: str
    clips: tuple
    settings: EncodeSettings
    raw_options: dict = dataclasses.field(default_factory=dict)


def _changed_since_inventory(store: Store, clip: dict[str, Any]) -> str | None:
    """Why the raw video no longer holds the bytes its clips were cut from, or None (the task's
    clips share one video: hashed once per task)."""
    from svd_dag.storage import sha256_of

    uri, want = clip["video_uri"], clip.get("video_sha256")
    if not want:
        return None
    if not store.exists(uri):
        return f"{uri}: raw video is gone (the clips were cut from sha256 {want})"
    found = sha256_of(store, uri)
    return None if found == want else (f"{uri}: raw video changed since it was inventoried: sha256 is now {found}, "
                                        f"the clips were cut from {want}; re-run raw_videos and clips")


def transcode_task(task: ShardTask) -> list[tuple[EncodedClip | None, str | None]]:
    """(encoded clip, None) or (None, reason naming the video and frames), per clip: one bad
    clip never loses the others. A video whose bytes changed since it was inventoried is not
    encoded (its shards would hold other frames than the lineage names)."""
    store = Store(task.raw_root, task.raw_options)
    changed = _changed_since_inventory(store, task.clips[0]) if task.clips else None
    if changed:
        return [(None, f"{clip_ref(clip)}: not transcoded: {changed}") for clip in task.clips]
    results = []
    for clip in task.clips:
        try:
            results.append((transcode_clip(store, clip, task.settings), None))
        except Exception as e:  # noqa: BLE001 - a clip that cannot be cut is reported, the rest go on
            results.append((None, f"{clip_ref(clip)}: not transcoded: {e if isinstance(e, VideoError) else repr(e)}"))
    return results


def plan_tasks(clips: Sequence[dict[str, Any]], settings: EncodeSettings, raw_root: str,
               raw_options: dict | None = None) -> list[ShardTask]:
    by_video: dict[str, list[dict]] = {}
    for c in clips:
        by_video.setdefault(c["video_uri"], []).append(c)
    tasks = []
    for group in by_video.values():
        group.sort(key=lambda c: c["start_frame"])
        for i in range(0, len(group), CLIPS_PER_TASK):
            tasks.append(ShardTask(raw_root, tuple(group[i : i + CLIPS_PER_TASK]), settings, dict(raw_options or {})))
    return tasks


# ---------------------------------------------------------------- packing

SHARD_NAME = re.compile(r"shard-(\d{6})\.tar$")


class ShardWriter:
    """Packs clips into new tar shards `<prefix>/shard-NNNNNN.tar` of about `target_bytes` or
    `max_clips` clips each, numbered after the shards already there (never overwritten).
    `on_shard(rows)` runs after each shard is written, so progress survives a killed run."""

    def __init__(self, store: Store, prefix: str, target_bytes: int, max_clips: int,
                 on_shard: Callable[[list[dict]], None] | None = None):
        self.store, self.prefix = store, prefix.strip("/")
        self.target_bytes, self.max_clips = max(1, target_bytes), max(1, max_clips)
        self.on_shard = on_shard
        self.number = _next_shard_number(store, self.prefix)
        self.shards: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self._open()

    def _open(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.USTAR_FORMAT)
        self._pending: list[dict[str, Any]] = []

    def _member(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return self._tar.offset - padded  # where the data starts: the tar's end, less the padded data

    def add(self, encoded: EncodedClip, meta: dict[str, Any], row: dict[str, Any]) -> None:
        """Add one clip (`meta` -> `<clip_id>.json`); `row` is completed with its shard reference."""
        self._member(f"{encoded.clip_id}.json", json.dumps(meta, sort_keys=True, default=str).encode())
        offset = self._member(f"{encoded.clip_id}.mp4", encoded.mp4)
        self._pending.append({**row, "shard_member": f"{encoded.clip_id}.mp4", "shard_offset": offset,
                              "shard_size": len(encoded.mp4)})
        if self._tar.offset >= self.target_bytes or len(self._pending) >= self.max_clips:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self._tar.close()
        data = self._buf.getvalue()
        rel = f"{self.prefix}/shard-{self.number:06d}.tar"
        if self.store.exists(rel):
            raise FileExistsError(f"{self.store.uri(rel)} already exists: shards are never rewritten")
        uri = self.store.write_bytes(rel, data)
        rows = [{**r, "shard_uri": uri} for r in self._pending]
        self.shards.append({"shard_uri": uri, "clips": len(rows), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
        self.rows += rows
        self.number += 1
        if self.on_shard is not None:
            self.on_shard(rows)
        self._open()


def _next_shard_number(store: Store, prefix: str) -> int:
    found = store.fs.glob(posixpath.join(store.uri(prefix), "shard-*.tar")) if store.exists(prefix) else []
    numbers = [int(m.group(1)) for m in (SHARD_NAME.search(p) for p in found) if m]
    return max(numbers, default=-1) + 1


def read_member(store: Store, shard_uri: str, offset: int, size: int) -> bytes:
    """One member's bytes by a ranged read (the rest of the tar is never fetched)."""
    return store.fs.cat_file(store.uri(shard_uri), start=int(offset), end=int(offset) + int(size))


def read_clip_frames(store: Store, row: dict[str, Any], indices: list[int]) -> list[np.ndarray]:
    """RGB frames of a sharded clip at source-video frame `indices` (start_frame-based)."""
    label = f"{row['shard_uri']}#{row['shard_member']}"
    try:
        data = read_member(store, row["shard_uri"], row["shard_offset"], row["shard_size"])
    except OSError as e:  # a missing shard or a failed remote read: this clip is skipped, like a bad video
        raise VideoError(f"{label}: shard unreadable ({type(e).__name__}: {e})") from e
    if hashlib.sha256(data).hexdigest() != row["shard_sha256"]:
        raise VideoError(f"{label}: checksum mismatch (shard changed or truncated)")
    return read_frames_from_bytes(data, [i - row["start_frame"] for i in indices], float(row["fps"]), label)


# ---------------------------------------------------------------- a run

@dataclass
class ShardRun:
    rows: list[dict[str, Any]]  # one per clip sharded in this run (catalog rows)
    failures: list[dict[str, Any]]  # clip, reason
    shards: list[dict[str, Any]]  # shard files written in this run


JSON_FIELDS = ("clip_id", "video_sha256", "video_uri", "start_frame", "end_frame", "start_s", "end_s", "duration_s",
               "fps", "width", "height", "caption")


def shard_clips(store: Store, clips: Sequence[dict[str, Any]], settings: EncodeSettings, encode_key: str,
                map_fn: Callable[[Callable, list], list[Outcome]], raw_root: str, raw_options: dict | None = None,
                target_bytes: int = 256 * 2**20, max_clips: int = 1000,
                on_shard: Callable[[list[dict]], None] | None = None) -> ShardRun:
    """Transcode `clips` (manifest rows) with `map_fn` (an executor's map) and pack them into
    new shards under `clip_shards/<encode_key>/`, in clip order within each video."""
    writer = ShardWriter(store, f"clip_shards/{encode_key}", target_bytes, max_clips, on_shard)
    tasks = plan_tasks(clips, settings, raw_root, raw_options)
    failures = []
    for i in range(0, len(tasks), TASKS_PER_BATCH):
        batch = tasks[i : i + TASKS_PER_BATCH]
        for task, outcome in zip(batch, map_fn(transcode_task, batch)):
            results = outcome.value if outcome.ok else [(None, f"{clip_ref(c)}: not transcoded: {outcome.error}")
                                                        for c in task.clips]
            for clip, (encoded, error) in zip(task.clips, results):
                if encoded is None:
                    failures.append({"clip": clip, "reason": error})
                    continue
                row = _catalog_row(clip, encoded, settings, encode_key)
                writer.add(encoded, {**{k: clip.get(k) for k in JSON_FIELDS}, **_shard_fields(row)}, row)
    writer.flush()
    return ShardRun(writer.rows, failures, writer.shards)


def _catalog_row(clip: dict, encoded: EncodedClip, settings: EncodeSettings, encode_key: str) -> dict[str, Any]:
    return {
        "clip_id": clip["clip_id"], "encode_key": encode_key, "video_sha256": clip["video_sha256"],
        "video_uri": clip["video_uri"], "start_frame": clip["start_frame"], "end_frame": clip["end_frame"],
        "shard_sha256": encoded.sha256, "shard_frames": encoded.frames, "shard_fps": encoded.fps,
        "shard_width": encoded.width, "shard_height": encoded.height,
        "source_width": clip.get("width"), "source_height": clip.get("height"),
        "max_height": settings.max_height, "crf": settings.crf, "preset": settings.preset,
        "encoder": f"{CODEC} (PyAV {av.__version__})",
        "encoded_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
    }


def _shard_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("encode_key", "shard_sha256", "shard_frames", "shard_fps", "shard_width", "shard_height")}


def shard_index(manifest: pa.Table, refs: Sequence[dict[str, Any]]) -> pa.Table:
    """The manifest's rows, in order, with their shard reference columns (null where a clip
    has no shard: it is read by reference)."""
    by_id = {r["clip_id"]: r for r in refs}
    matched = [by_id.get(c) for c in manifest.column("clip_id").to_pylist()]
    table = manifest
    for f in SHARD_SCHEMA:
        if f.name in table.column_names:
            table = table.drop_columns([f.name])
        table = table.append_column(f, pa.array([m[f.name] if m else None for m in matched], type=f.type))
    return table
