"""Synthetic test videos written with PyAV's libx264 (real encoder, real decoder)."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import cv2
import numpy as np

W, H, FPS = 320, 240, 25


def texture(seed: int, w: int = W * 2, h: int = H * 2) -> np.ndarray:
    """A smooth coloured random texture (RGB), so detectors and flow see real structure."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    img = cv2.GaussianBlur(img, (0, 0), 3).astype(np.float32)
    tint = rng.uniform(0.2, 1.0, size=3)  # each shot its own palette, as real shots have
    return np.clip(img * tint, 0, 255).astype(np.uint8)


def pan_frames(seed: int, n: int, speed: float) -> list[np.ndarray]:
    """n frames of a texture panned horizontally by `speed` pixels per frame."""
    big = texture(seed)
    out = []
    for i in range(n):
        x = int(round(i * speed)) % (big.shape[1] - W)
        out.append(np.ascontiguousarray(big[H // 2 : H // 2 + H, x : x + W]))
    return out


def write_video(path: str, frames: list[np.ndarray], fps: int = FPS, faststart: bool = False,
                keyint: int | None = None, pts: list[int] | None = None) -> str:
    """H.264 mp4 of `frames`; `keyint` caps the keyframe interval, `pts` (in 1/fps units)
    replaces the regular timestamps 0, 1, 2, ..."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(path, "w", options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        # No macroblock-tree rate control: with it, x264's output for the same frames differs
        # from run to run on some content (the zoom), and so would file hashes, clip ids and
        # the hash-based eval split that tests rely on.
        stream.options = {"crf": "18", "preset": "veryfast",
                          "x264-params": "no-mbtree=1" + (f":keyint={keyint}:min-keyint={keyint}" if keyint else "")}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def crossfade_video(path: str, fade_frames: int = 8, shot_s: float = 3.0) -> tuple[str, int]:
    """Two shots joined by a linear cross-fade; returns (path, the fade's middle frame)."""
    n = int(shot_s * FPS)
    a = pan_frames(1, n + fade_frames, 0.5)
    b = pan_frames(2, n + fade_frames, 0.5)
    frames = a[:n]
    for i in range(fade_frames):
        t = (i + 1) / (fade_frames + 1)
        frames.append(cv2.addWeighted(a[n + i], 1 - t, b[i], t, 0))
    frames += b[fade_frames : fade_frames + n]
    return write_video(path, frames), n + fade_frames // 2


def static_video(path: str, seconds: float = 3.0) -> str:
    return write_video(path, pan_frames(3, int(seconds * FPS), 0.0))


def moving_video(path: str, seconds: float = 3.0, speed: float = 4.0) -> str:
    return write_video(path, pan_frames(4, int(seconds * FPS), speed))


def zoom_frames(seed: int, n: int, rate: float) -> list[np.ndarray]:
    """n frames zooming into a texture by `rate` (scale factor per frame, > 1 zooms in)."""
    big = texture(seed)
    cy, cx = big.shape[0] / 2, big.shape[1] / 2
    out = []
    for i in range(n):
        s = rate**i
        m = np.float32([[s, 0, W / 2 - s * cx], [0, s, H / 2 - s * cy]])
        out.append(cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return out


def zoom_video(path: str, seconds: float = 3.0, rate: float = 1.01) -> str:
    return write_video(path, zoom_frames(6, int(seconds * FPS), rate))


def one_frame_video(path: str) -> str:
    return write_video(path, pan_frames(5, 1, 0.0))


def truncated_video(path: str, keep_fraction: float = 0.5) -> str:
    """An mp4 cut short with its index (moov) at the end: the container cannot be opened."""
    moving_video(path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])
    return path


def bad_metadata_video(path: str, keep_fraction: float = 0.5) -> str:
    """Index first (faststart), media data cut: the header promises more frames than decode."""
    write_video(path, pan_frames(6, 75, 3.0), faststart=True)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])
    return path


def text_file_named_mp4(path: str) -> str:
    with open(path, "w") as f:
        f.write("this is not a video, just text with a video's name\n" * 20)
    return path


def zero_byte_file(path: str) -> str:
    open(path, "wb").close()
    return path
