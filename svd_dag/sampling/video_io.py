"""Turning sampled frames into files and previews: H.264 mp4 bytes, GIF previews, Dagster markdown.

Everything takes numpy uint8 RGB frames [F, H, W, 3] and returns bytes, so callers write
the result wherever they like (a local folder or s3 through `svd_dag.storage`). No torch
import: `frames_from_latent_decode` accepts a torch tensor by duck typing (`.detach()`).
"""

from __future__ import annotations

import base64
import io
import math
import numbers
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image

_SMPTE170M = 6  # AVCOL_SPC / AVCOL_PRI / AVCOL_TRC value for BT.601 (525-line)
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: limited range 16..235
GIF_MIN_FRAME_MS = 20  # browsers play GIF frames shorter than 20 ms at 100 ms; clamp instead


def _check_frames(frames: Any) -> np.ndarray:
    """frames as a uint8 [F, H, W, 3] array with F, H, W >= 1, else a ValueError saying what is wrong."""
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must have shape [F, H, W, 3] (RGB), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("frames is empty: no frames to encode")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"frames have zero height or width: shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {array.dtype}")
    return array


def _check_fps(fps: float | Fraction) -> Fraction:
    """fps as an exact Fraction (float rates snapped to a denominator <= 1001), else a ValueError."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)  # 29.97 -> 30000/1001


def even_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) `encode_mp4` writes: each odd size rounded up to the next even number."""
    return height + height % 2, width + width % 2


def encode_mp4(frames: np.ndarray, fps: float | Fraction, *, crf: int = 18) -> bytes:
    """H.264 (libx264, yuv420p) mp4 of `frames`, in memory.

    yuv420p needs even sizes: an odd height or width is PADDED by one row/column that repeats
    the last one (no pixel is lost; see `even_size`). crf is x264's quality (0 lossless luma .. 51;
    18 is visually near-lossless). The moov atom stays at the end (no faststart: that needs a
    file on disk).
    """
    array = _check_frames(frames)
    rate = _check_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
    _, height, width, _ = array.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        # Tag what swscale's default RGB -> YUV conversion produces (BT.601, limited range), so
        # players do not guess BT.709 and shift the colours.
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = _SMPTE170M
        context.color_range = _MPEG_RANGE
        for index, frame in enumerate(array):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())  # flush delayed (B-)frames
    return buffer.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    """All frames of a video held in memory, as uint8 RGB [F, H, W, 3]."""
    if not data:
        raise ValueError("decode_mp4: no data (empty bytes)")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("decode_mp4: the data holds no video stream")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.error.FFmpegError as err:
        raise ValueError(f"decode_mp4: not a readable video ({err})") from err
    if not frames:
        raise ValueError("decode_mp4: the video stream decoded to no frames")
    return np.stack(frames)


def gif_frame_ms(fps: float | Fraction) -> int:
    """Per-frame GIF duration in ms: 1000/fps rounded to GIF's 10 ms ticks, at least 20 ms."""
    ticks = math.floor(100 / _check_fps(fps) + Fraction(1, 2))
    return max(GIF_MIN_FRAME_MS, 10 * ticks)


def encode_gif(frames: np.ndarray, fps: float | Fraction, max_width: int = 256) -> bytes:
    """Animated GIF preview that loops forever, downscaled (Lanczos) to at most max_width, aspect kept.

    Each frame gets `gif_frame_ms(fps)`. Pillow merges identical consecutive frames into one
    frame of the summed duration, so a still stretch has fewer frames but the same timing.
    """
    array = _check_frames(frames)
    frame_ms = gif_frame_ms(fps)
    if isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < 1:
        raise ValueError(f"max_width must be a positive integer, got {max_width!r}")
    _, height, width, _ = array.shape
    size = (width, height)
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
    images = [Image.fromarray(frame) for frame in array]
    if size != (width, height):
        images = [image.resize(size, Image.Resampling.LANCZOS) for image in images]

    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def preview_markdown(gif_bytes: bytes, caption: str) -> str:
    """Markdown showing the GIF inline (base64 data URI) with the caption as a paragraph under it."""
    if not isinstance(gif_bytes, (bytes, bytearray)) or not bytes(gif_bytes[:6]) in (b"GIF87a", b"GIF89a"):
        raise ValueError("preview_markdown: gif_bytes is not a GIF (it must start with GIF87a/GIF89a)")
    data_uri = "data:image/gif;base64," + base64.b64encode(bytes(gif_bytes)).decode("ascii")
    return f"![preview]({data_uri})\n\n{caption}\n"


def frames_from_latent_decode(tensor: Any) -> np.ndarray:
    """A decoded video [F, 3, H, W], float in [-1, 1] (torch or numpy), as uint8 RGB [F, H, W, 3].

    Values are clamped to [-1, 1], mapped by (x + 1) * 127.5 and rounded to the nearest integer.
    """
    if hasattr(tensor, "detach"):  # torch.Tensor; .float() first because numpy has no bfloat16
        tensor = tensor.detach().to("cpu").float().numpy()
    array = np.asarray(tensor)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"decoded video must have shape [F, 3, H, W], got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("decoded video has no frames")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"decoded video must be floating point in [-1, 1], got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("decoded video contains NaN or infinite values")
    pixels = np.rint((np.clip(array.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5)
    return np.ascontiguousarray(pixels.astype(np.uint8).transpose(0, 2, 3, 1))


__all__ = [
    "decode_mp4",
    "encode_gif",
    "encode_mp4",
    "even_size",
    "frames_from_latent_decode",
    "gif_frame_ms",
    "preview_markdown",
]
