"""Running an annotator over clips: frames from the stored samples, failures kept apart.

Frames come from the 2-fps samples that the `clips` decode stored (one Parquet file per
video, read once per video). A clip whose frames cannot be read, or whose scoring raises,
becomes a failure with its reason (quarantined by the caller), never a low score.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import traceback
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pyarrow.parquet as pq

from svd_dag.curation.threads import available_cpus, opencv_threads
from svd_dag.curation.video_scan import decode_jpeg
from svd_dag.storage import Store

FrameSelection = str  # "keyframes" (first, middle, last sample) | "middle" | "all"


def select_frames(sample_frames: list[int], which: FrameSelection) -> list[int]:
    if not sample_frames:
        return []
    if which == "all":
        return list(sample_frames)
    if which == "middle":
        return [sample_frames[len(sample_frames) // 2]]
    picks = [sample_frames[0], sample_frames[len(sample_frames) // 2], sample_frames[-1]]
    return list(dict.fromkeys(picks))


def clip_ref(clip: dict[str, Any]) -> str:
    """A human-readable pointer to a clip inside its video, for quarantine rows."""
    return f"{clip['video_uri']}#frames={clip['start_frame']}-{clip['end_frame']}"


def _clip_jpegs(
    store: Store, clips: Iterable[dict[str, Any]], which: FrameSelection
) -> Iterator[list[tuple[dict[str, Any], list[bytes] | None, str | None]]]:
    """Per samples file (one per video, read once): (clip, its JPEGs, None) or (clip, None, reason)."""
    by_samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in clips:
        by_samples[c["samples_uri"]].append(c)
    for samples_uri, group in by_samples.items():
        try:
            table = pq.read_table(store.open(samples_uri, "rb"))
            jpegs = dict(zip(table.column("frame_index").to_pylist(), table.column("jpeg").to_pylist()))
        except Exception as e:  # noqa: BLE001 - a missing or corrupt samples file fails only its clips
            yield [(c, None, f"{clip_ref(c)}: stored frame samples unreadable at {samples_uri} ({type(e).__name__}: {e})")
                   for c in group]
            continue
        out = []
        for c in group:
            wanted = select_frames(list(c["sample_frames"]), which)
            missing = [f for f in wanted if f not in jpegs]
            if not wanted or missing:
                out.append((c, None, f"{clip_ref(c)}: sampled frames {missing or 'none'} missing from {samples_uri}"))
            else:
                out.append((c, [jpegs[f] for f in wanted], None))
        yield out


def iter_clip_frames(
    store: Store, clips: Iterable[dict[str, Any]], which: FrameSelection
) -> Iterator[tuple[dict[str, Any], list | None, str | None]]:
    """(clip, RGB frames, None) or (clip, None, reason), reading each video's samples once."""
    for group in _clip_jpegs(store, clips, which):
        for clip, jpegs, error in group:
            yield clip, None if jpegs is None else [decode_jpeg(j) for j in jpegs], error


@dataclass
class AnnotationRun:
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def annotate(
    store: Store,
    clips: Iterable[dict[str, Any]],
    which: FrameSelection,
    score: Callable[[dict[str, Any], list], dict[str, Any]],
    annotator: str,
    model_version: str,
    weights: str,
    workers: int = 1,
) -> AnnotationRun:
    """Apply `score(clip, frames) -> columns` to every clip; rows carry who scored them.

    `workers` > 1 scores the clips of one video at a time in that many threads (0: one per
    CPU), with OpenCV's own pool off meanwhile. Only for scorers that spend their time in
    code that releases the GIL (OpenCV); the torch models keep `workers=1` and their own
    intra-op threads. Rows come out in the same order either way.
    """
    run = AnnotationRun()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def one(item: tuple[dict[str, Any], list[bytes] | None, str | None]) -> tuple[dict[str, Any], dict | None, str | None]:
        clip, jpegs, error = item
        if error is not None:
            return clip, None, error
        try:
            return clip, score(clip, [decode_jpeg(j) for j in jpegs]), None
        except Exception as e:  # noqa: BLE001 - one clip's failure is recorded, the rest go on
            last = traceback.extract_tb(e.__traceback__)[-1]
            return clip, None, f"{clip_ref(clip)}: {annotator} failed: {type(e).__name__}: {e} (at {last.name}:{last.lineno})"

    workers = workers if workers > 0 else available_cpus()
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            stack.enter_context(opencv_threads(1))
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=workers, thread_name_prefix=annotator))
        for group in _clip_jpegs(store, clips, which):
            for clip, columns, error in (pool.map(one, group) if pool else map(one, group)):
                if error is not None:
                    run.failures.append({"uri": clip_ref(clip), "clip_id": clip["clip_id"], "reason": error})
                    continue
                run.rows.append(
                    {
                        "clip_id": clip["clip_id"],
                        **columns,
                        "annotator": annotator,
                        "model_version": model_version,
                        "weights": weights,
                        "annotated_at": now,
                    }
                )
    return run
