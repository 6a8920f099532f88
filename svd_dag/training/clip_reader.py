"""Reading a clip's frames from its source video, by reference (no transcoded copy needed).

A clip is (video_uri, start_frame, end_frame) with frame indices counted in decode order
from the first frame, as curation counted them. We seek to the keyframe before the clip
and map each decoded frame's pts back to that index, so reading a clip near the end of a
long video does not decode the whole video. The same decode loop reads clips transcoded
into shards (`svd_dag.curation.shards`), from bytes in memory.
"""

from __future__ import annotations

import io
from typing import Iterator

import av
import cv2
import numpy as np

from svd_dag.curation.media import VideoError, open_container, open_video
from svd_dag.storage import Store


def frame_indices(start: int, end: int, fps: float, num_frames: int, target_fps: float, offset: int = 0) -> list[int]:
    """`num_frames` indices in [start, end) spaced to play at `target_fps`, from `offset`.

    The stride is the whole number of source frames closest to fps / target_fps (at least
    1); if the clip is too short for that stride, the stride shrinks so the frames still fit.
    """
    length = end - start
    if length < num_frames:
        raise ValueError(f"clip of {length} frames is shorter than the {num_frames} frames requested")
    stride = max(1, int(round(fps / target_fps)))
    stride = min(stride, max(1, (length - 1) // max(1, num_frames - 1)))
    span = stride * (num_frames - 1) + 1
    first = start + min(max(0, offset), length - span)
    return [first + i * stride for i in range(num_frames)]


def effective_fps(fps: float, indices: list[int]) -> float:
    return fps / (indices[1] - indices[0]) if len(indices) > 1 else fps


def decode_range(container: av.container.InputContainer, first: int, last: int, fps: float,
                 uri: str) -> Iterator[tuple[int, av.VideoFrame]]:
    """(decode-order index, frame) for the frames in [first, last], ascending, each index once.

    Seeks to the keyframe before `first`; frames missing from the stream are simply absent
    (callers decide whether that is an error). FFmpeg errors become a VideoError naming `uri`.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb = float(stream.time_base)
    origin = stream.start_time or 0
    seek_s = max(0.0, first / fps - 1.0)
    if seek_s > 0:
        container.seek(int(seek_s / tb) + origin, stream=stream, backward=True, any_frame=False)
    last_seen = first - 1
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            idx = int(round((frame.pts - origin) * tb * fps))
            if first <= idx <= last and idx > last_seen:
                last_seen = idx
                yield idx, frame
            if idx >= last:
                return
    except av.error.FFmpegError as e:
        raise VideoError(f"{uri}: decoding failed near frame {max(last_seen, first)} ({e})") from e


def _pick_frames(container: av.container.InputContainer, indices: list[int], fps: float, uri: str) -> list[np.ndarray]:
    wanted = sorted(set(indices))
    got = {idx: frame.to_ndarray(format="rgb24")
           for idx, frame in decode_range(container, wanted[0], wanted[-1], fps, uri) if idx in wanted}
    missing = [i for i in wanted if i not in got]
    if missing:
        raise VideoError(f"{uri}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} did not decode")
    return [got[i] for i in indices]


def read_frames(store: Store, uri: str, indices: list[int], fps: float) -> list[np.ndarray]:
    """RGB uint8 frames at the given decode-order indices (sorted ascending)."""
    with open_video(store, uri) as container:
        return _pick_frames(container, indices, fps, uri)


def read_frames_from_bytes(data: bytes, indices: list[int], fps: float, label: str) -> list[np.ndarray]:
    """Like `read_frames`, from a video held in memory (indices count from its first frame)."""
    with open_container(io.BytesIO(data), label) as container:
        return _pick_frames(container, indices, fps, label)


def resize_center_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale so the frame covers (height, width), then crop the centre (no distortion)."""
    h, w = rgb.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (nh - height) // 2, (nw - width) // 2
    return resized[top : top + height, left : left + width]
