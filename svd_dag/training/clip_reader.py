"""Which frames of a clip a training item takes, and how they are fitted to the stage's size.

A clip is (video_uri, start_frame, end_frame) with frame indices counted in decode order
from the first frame, as curation counted them; the frames themselves are decoded by
`svd_dag.curation.media.read_frames` (by reference into the raw video) or
`read_frames_from_bytes` (a clip's mp4 from `clip_shards`).
"""

from __future__ import annotations

import cv2
import numpy as np


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


def resize_center_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale so the frame covers (height, width), then crop the centre (no distortion)."""
    h, w = rgb.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (nh - height) // 2, (nw - width) // 2
    return resized[top : top + height, left : left + width]
