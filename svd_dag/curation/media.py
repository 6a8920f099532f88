"""Opening videos with PyAV (in-process FFmpeg: no ffmpeg binary needed) and probing them.

Every failure becomes a `VideoError` whose message names the file and says what is wrong
in words a person understands; callers quarantine on it and carry on with the batch.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import av
import numpy as np

from svd_dag.storage import Store


def clip_ref(clip: dict) -> str:
    """A human-readable pointer to a clip inside its video, for quarantine rows."""
    return f"{clip['video_uri']}#frames={clip['start_frame']}-{clip['end_frame']}"


class VideoError(Exception):
    """A video that cannot be used; str() is the human-readable reason."""


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    fps: float
    frame_count: int  # as the container header states it (0 when the header does not say)
    width: int
    height: int
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def open_video(store: Store, uri: str) -> Iterator[av.container.InputContainer]:
    """Open `uri` for decoding; local files by path, remote ones through fsspec."""
    try:
        size = store.size(uri)
    except FileNotFoundError as e:
        raise VideoError(f"{uri}: file not found") from e
    if size == 0:
        raise VideoError(f"{uri}: file is empty (0 bytes)")
    local = store.local_path(uri)
    with contextlib.ExitStack() as stack:
        source = local if local is not None else stack.enter_context(store.open(uri, "rb"))
        with open_container(source, uri) as container:
            yield container


@contextlib.contextmanager
def open_container(source: Any, label: str) -> Iterator[av.container.InputContainer]:
    """Open a path or file object (an in-memory shard member, say) for decoding; `label`
    names it in errors."""
    try:
        container = av.open(source, mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"{label}: not a readable video container ({_ffmpeg_reason(e)})") from e
    try:
        if not container.streams.video:
            raise VideoError(f"{label}: the container has no video stream")
        yield container
    finally:
        container.close()


def _ffmpeg_reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(":", 1)[0] if "moov atom" not in text else "moov atom not found: truncated mp4"


def probe(container: av.container.InputContainer, uri: str) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoError(f"{uri}: the video stream declares no frame rate")
    fps = float(rate)
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise VideoError(f"{uri}: the video stream declares no frame size")
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = (stream.frames or 0) / fps
    frames = int(stream.frames or 0) or int(round(duration * fps))
    return VideoInfo(
        container=container.format.name,
        codec=ctx.name or "unknown",
        fps=fps,
        frame_count=frames,
        width=int(ctx.width),
        height=int(ctx.height),
        duration_s=duration,
    )


def probe_uri(store: Store, uri: str) -> VideoInfo:
    with open_video(store, uri) as container:
        return probe(container, uri)


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) at `target_width` keeping aspect, both even (codecs and swscale like even)."""
    if width <= target_width:
        return width - width % 2, height - height % 2
    h = max(2, int(round(height * target_width / width / 2)) * 2)
    return target_width, h


# ---------------------------------------------------------------- frames by decode-order index
# Seek to the keyframe before the wanted range and map each decoded frame's pts back to its
# index, so reading a clip near the end of a long video does not decode the whole video.

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
