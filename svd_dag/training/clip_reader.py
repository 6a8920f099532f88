"""Reading a clip's frames from its source video, by reference (no transcoded copy needed).

A clip is (video_uri, start_frame, end_frame) with frame indices counted in decode order
from the first frame, as curation counted them. We seek to the keyframe before the clip
and map each decoded frame's pts back to that index, so reading a clip near the end of a
long video does not decode the whole video.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from svd_dag.curation.media import VideoError, open_video
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


def read_frames(store: Store, uri: str, indices: list[int], fps: float) -> list[np.ndarray]:
    """RGB uint8 frames at the given decode-order indices (sorted ascending)."""
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    with open_video(store, uri) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        origin = stream.start_time or 0
        seek_s = max(0.0, wanted[0] / fps - 1.0)
        if seek_s > 0:
            container.seek(int(seek_s / tb) + origin, stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                idx = int(round((frame.pts - origin) * tb * fps))
                if idx in wanted:
                    got[idx] = frame.to_ndarray(format="rgb24")
                if idx >= wanted[-1]:
                    break
        except av.error.FFmpegError as e:
            raise VideoError(f"{uri}: decoding failed near frame {max(got, default=wanted[0])} ({e})") from e
    missing = [i for i in wanted if i not in got]
    if missing:
        raise VideoError(f"{uri}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} did not decode")
    return [got[i] for i in indices]


def resize_center_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale so the frame covers (height, width), then crop the centre (no distortion)."""
    h, w = rgb.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (nh - height) // 2, (nw - width) // 2
    return resized[top : top + height, left : left + width]
