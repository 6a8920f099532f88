"""Decoding one video as several segments at once, each from a keyframe, frame-exact.

Why: with a few CPUs, FFmpeg's frame threads cost 1.15-1.5x the CPU of a one-thread
decode for the same frames (docs/performance.md, "Change P4"). k one-thread decoders, each
on its own stretch of the video and each followed by its own analysis, keep k cores busy
without that overhead, and scale with the CPU budget of the video.

Frame-exact: a frame's index comes from its timestamp on the stream's constant frame rate,
and every segment checks that it yields exactly frames lo, lo+1, ..., hi-1. A video whose
timestamps leave that grid (variable frame rate, edit lists, broken timestamps), whose
keyframes cannot be reached by seeking, or that fails to decode, raises `SegmentMismatch`
or FFmpeg's error, and the caller decodes it in one piece instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av

# Shorter stretches are not worth a seek and a thread of their own.
MIN_SEGMENT_FRAMES = 300
# Frames decoded after a seek while looking for the keyframe it landed on (an open GOP's
# leading frames come first).
KEY_SEARCH_FRAMES = 16
# How far off the frame grid a timestamp may be and still name a frame (timestamps stored
# in milliseconds are up to half a millisecond off: 0.03 frames at 60 fps).
GRID_TOLERANCE = Fraction(1, 4)


class SegmentMismatch(Exception):
    """This video cannot be decoded in segments frame-exactly; decode it in one piece."""


@dataclass(frozen=True)
class FrameClock:
    """Frame index from a timestamp, on a constant frame rate."""

    start_pts: int
    time_base: Fraction
    rate: Fraction

    def index(self, pts: int | None) -> int:
        if pts is None:
            raise SegmentMismatch("a decoded frame has no timestamp")
        exact = (pts - self.start_pts) * self.time_base * self.rate
        i = round(exact)
        if abs(exact - i) > GRID_TOLERANCE:
            raise SegmentMismatch(f"timestamp {pts} is off the {float(self.rate):g}-fps frame grid")
        return i

    def pts(self, index: int) -> int:
        return self.start_pts + int(index / (self.rate * self.time_base))


@dataclass(frozen=True)
class Segment:
    seek_pts: int | None  # the keyframe this segment starts on (None: the start of the stream)
    lo: int  # first frame
    hi: int | None  # one past the last frame (None: to the end of the stream)


def segment_count(budget: int, frame_count: int, min_frames: int = MIN_SEGMENT_FRAMES) -> int:
    """Segments worth decoding for a video of `frame_count` frames with `budget` CPUs."""
    return max(1, min(budget, frame_count // max(1, min_frames)))


def plan_segments(
    container: av.container.InputContainer, stream: av.VideoStream, count: int, frame_count: int,
    min_frames: int = MIN_SEGMENT_FRAMES,
) -> tuple[FrameClock, list[Segment]] | None:
    """Split the stream at keyframes near equal shares of its frames: up to `count` segments
    of at least `min_frames` each, or None when fewer than two are possible. Seeks
    `container`, which the caller must not decode from afterwards."""
    # The base rate (FFmpeg's r_frame_rate guess) is the grid timestamps sit on; the average
    # rate is frames over duration and only equals it when the rate is constant.
    rate = stream.guessed_rate or stream.average_rate
    if count < 2 or not rate or not stream.time_base:
        return None
    first = next(iter(container.decode(stream)), None)
    if first is None or first.pts is None:
        return None
    clock = FrameClock(first.pts, Fraction(stream.time_base), Fraction(rate))
    seams: list[tuple[int, int]] = []  # (keyframe pts, frame index)
    for j in range(1, count):
        container.seek(clock.pts(frame_count * j // count), stream=stream, backward=True, any_frame=False)
        key = next((f for _, f in zip(range(KEY_SEARCH_FRAMES), container.decode(stream)) if f.key_frame), None)
        if key is None:
            continue
        index = clock.index(key.pts)
        if index - (seams[-1][1] if seams else 0) >= min_frames and frame_count - index >= min_frames:
            seams.append((key.pts, index))
    if not seams:
        return None
    starts = [(None, 0), *seams]
    ends = [index for _, index in seams] + [None]
    return clock, [Segment(pts, lo, hi) for (pts, lo), hi in zip(starts, ends)]


def segment_frames(
    container: av.container.InputContainer, stream: av.VideoStream, clock: FrameClock, segment: Segment
) -> Iterator[tuple[int, av.VideoFrame]]:
    """(index, frame) for exactly the frames of `segment`, or SegmentMismatch."""
    if segment.seek_pts is not None:
        container.seek(segment.seek_pts, stream=stream, backward=True, any_frame=False)
    expected = segment.lo
    for frame in container.decode(stream):
        index = clock.index(frame.pts)
        if index < segment.lo:
            continue  # an open GOP's leading frames: they belong to the segment before
        if segment.hi is not None and index >= segment.hi:
            break
        if index != expected:
            raise SegmentMismatch(f"frame {expected} expected, the timestamp says {index}")
        yield index, frame
        expected += 1
    if expected == segment.lo or (segment.hi is not None and expected != segment.hi):
        raise SegmentMismatch(f"the segment from frame {segment.lo} ended at frame {expected}")
