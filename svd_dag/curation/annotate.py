"""Running an annotator over clips: frames from the stored samples, failures kept apart.

Frames come from the 2-fps samples that the `clips` decode stored (one Parquet file per
video, read once per video). A clip whose frames cannot be read, or whose scoring raises,
becomes a failure with its reason (quarantined by the caller), never a low score.
"""

from __future__ import annotations

import datetime as dt
import traceback
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import pyarrow.parquet as pq

from svd_dag.curation.media import clip_ref  # noqa: F401 (callers import it from here too)
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
    node: str | None = None  # the Ray node that scored the batch (None: this process)


def failure_row(clip: dict[str, Any], reason: str) -> dict[str, Any]:
    """A clip that could not be scored, as the quarantine takes it."""
    return {"uri": clip_ref(clip), "clip_id": clip["clip_id"], "reason": reason}


def _reason(clip: dict[str, Any], annotator: str, e: Exception) -> str:
    last = traceback.extract_tb(e.__traceback__)[-1]
    return f"{clip_ref(clip)}: {annotator} failed: {type(e).__name__}: {e} (at {last.name}:{last.lineno})"


def _decoded(store: Store, clips: list[dict[str, Any]], which: FrameSelection, threads: int):
    """(clip, RGB frames, None) or (clip, None, reason) for each clip, JPEGs decoded in threads
    (OpenCV releases the GIL)."""
    items = [item for group in _clip_jpegs(store, clips, which) for item in group]
    decode = lambda item: (item[0], None if item[1] is None else [decode_jpeg(j) for j in item[1]], item[2])  # noqa: E731
    if threads <= 1 or len(items) <= 1:
        return [decode(item) for item in items]
    with opencv_threads(1), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="jpeg") as pool:
        return list(pool.map(decode, items))


def score_clips(store: Store, clips: list[dict[str, Any]], which: FrameSelection, scorer, identity,
                threads: int = 0) -> AnnotationRun:
    """Score a batch of clips with `scorer` (see frame_annotators.py) in one call; rows carry
    who scored them and on what device.

    If the batch call raises, each clip is scored alone, so only the clip that fails becomes a
    failure (with its reason) and the rest of the batch keeps its scores."""
    run = AnnotationRun()
    stamp = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    ready = []
    for clip, frames, error in _decoded(store, clips, which, threads if threads > 0 else available_cpus()):
        if error is not None:
            run.failures.append(failure_row(clip, error))
        else:
            ready.append((clip, frames))
    try:
        scored = list(zip(ready, scorer.score([frames for _, frames in ready]))) if ready else []
    except Exception:  # noqa: BLE001 - find the clip that fails; the others keep their scores
        scored = []
        for clip, frames in ready:
            try:
                scored.append(((clip, frames), scorer.score([frames])[0]))
            except Exception as e:  # noqa: BLE001
                run.failures.append(failure_row(clip, _reason(clip, identity.annotator, e)))
    for (clip, _), columns in scored:
        run.rows.append({"clip_id": clip["clip_id"], **columns, "annotator": identity.annotator,
                         "model_version": identity.model_version, "weights": identity.weights,
                         **scorer.placement.label(), "annotated_at": stamp})
    return run


def score_in_process(spec, identity, store: Store):
    """A stream `batches -> (batch, AnnotationRun)` scoring here: the model is built once."""
    scorer = spec.build()

    def stream(batches: Iterable[list[dict[str, Any]]]) -> Iterator[tuple[list[dict[str, Any]], AnnotationRun]]:
        for batch in batches:
            yield batch, score_clips(store, batch, spec.which, scorer, identity)

    return stream
