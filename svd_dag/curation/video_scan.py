"""The one decode of a raw video: cut detection and every frame the annotators need.

A single pass over the decoded frames (in segments at once when the CPU budget allows,
see `segments.py`) feeds all cascade passes (small BGR frames) and keeps, at `sample_fps` (2 fps, the paper's rate for optical flow), a JPEG of the frame at
annotator resolution. Annotators (flow, OCR, CLIP, captions) read those samples from
storage and never open the video again; a clip's first/middle/last frames are its first,
middle and last samples, which keeps them off the transition frames at its boundaries.
"""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import av
from av.video.reformatter import VideoReformatter
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svd_dag.curation.cuts import Boundary, CascadeConfig, CascadeDetector, FeatureExtractor, FrameFeatures
from svd_dag.curation.media import VideoError, VideoInfo, open_video, probe, scaled_size
from svd_dag.curation.segments import (
    MIN_SEGMENT_FRAMES, FrameClock, Segment, SegmentMismatch, plan_segments, segment_count, segment_frames,
)
from svd_dag.curation.threads import available_cpus, opencv_threads, read_ahead
from svd_dag.storage import Store

# A header may legitimately over-count by a few frames (edit lists, B-frame delay).
HEADER_SLACK_FRAMES = 2
HEADER_SLACK_FRACTION = 0.01

SAMPLES_SCHEMA = pa.schema(
    [("frame_index", pa.int64()), ("time_s", pa.float64()), ("width", pa.int32()), ("height", pa.int32()), ("jpeg", pa.binary())]
)


@dataclass(frozen=True)
class SampleConfig:
    sample_fps: float = 2.0
    sample_width: int = 512
    jpeg_quality: int = 95

    def label(self) -> str:
        """What the stored samples are, e.g. `2fps-512w-q95`: part of every frame annotator's
        version, so scores are recomputed when the frames they were computed on change."""
        return f"{self.sample_fps:g}fps-{self.sample_width}w-q{self.jpeg_quality}"

    def validate(self) -> None:
        if not 0 < self.sample_fps <= 30:
            raise ValueError(f"sample_fps must be in (0, 30], got {self.sample_fps}")
        if self.sample_width < 64:
            raise ValueError(f"sample_width must be >= 64, got {self.sample_width}")


@dataclass
class VideoScan:
    info: VideoInfo
    frames_decoded: int
    boundaries: list[Boundary]
    samples: pa.Table  # SAMPLES_SCHEMA
    passes: list[str] = field(default_factory=list)
    segments: int = 1  # how many parts the video was decoded in at once (1: in one piece)
    split_note: str = ""  # why a video long enough to split was decoded in one piece


def sample_indices(fps: float, sample_fps: float, n_frames_hint: int | None = None):
    """Frame indices on the global sample grid k / sample_fps seconds (nearest frame)."""
    k = 0
    while True:
        idx = int(round(k * fps / sample_fps))
        if n_frames_hint is not None and idx >= n_frames_hint:
            return
        yield idx
        k += 1


# Above this many pixels a frame costs more to decode than to analyse (the analysis works on
# 256-wide copies), so the decoder gets the whole budget; at or below it, one CPU is kept
# for the analysis. Measured on 2 CPUs (docs/performance.md): 640x272 scans fastest with a
# 1-thread decoder, 960x408 and larger with 2 decoder threads.
SMALL_FRAME_PIXELS = 640 * 480


def decoder_threads(threads: int, width: int, height: int) -> int:
    """FFmpeg decode threads for a video of this size under a budget of `threads` CPUs."""
    if width * height > SMALL_FRAME_PIXELS:
        return max(1, threads)
    return max(1, threads - 1)


class _FrameSink:
    """Decoded frames -> the cascade's small BGR frames (handed to `on_small`) and the 2-fps
    JPEG samples. One per decoding thread: the converters are not shared."""

    def __init__(self, uri: str, info: VideoInfo, cascade: CascadeConfig, sampling: SampleConfig,
                 on_small: Callable[[int, np.ndarray], None]):
        self.uri, self.on_small, self.quality = uri, on_small, sampling.jpeg_quality
        self.small_size = scaled_size(info.width, info.height, cascade.detect_width)
        self.sample_size = scaled_size(info.width, info.height, sampling.sample_width)
        # One converter per output size, single-threaded: frame.reformat() builds a new
        # (multi-threaded) swscale context for every frame, which cost more than the decode
        # itself (docs/performance.md).
        self.to_small, self.to_sample = VideoReformatter(), VideoReformatter()
        self.fps = info.fps
        self.grid = sample_indices(info.fps, sampling.sample_fps)
        self.next_sample = next(self.grid)
        self.rows: dict[str, list] = {k: [] for k in SAMPLES_SCHEMA.names}

    def add(self, index: int, frame: av.VideoFrame) -> None:
        dw, dh = self.small_size
        self.on_small(index, self.to_small.reformat(frame, width=dw, height=dh, format="bgr24", threads=1).to_ndarray())
        while self.next_sample < index:  # a segment starts mid-grid; sample_fps > fps repeats indices
            self.next_sample = next(self.grid)
        if index != self.next_sample:
            return
        sw, sh = self.sample_size
        big = self.to_sample.reformat(frame, width=sw, height=sh, format="bgr24", threads=1).to_ndarray()
        ok, jpg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise VideoError(f"{self.uri}: could not encode sample frame {index}")
        for key, value in zip(SAMPLES_SCHEMA.names, (index, index / self.fps, sw, sh, jpg.tobytes())):
            self.rows[key].append(value)


def _samples_table(sinks: list[_FrameSink]) -> pa.Table:
    return pa.table({k: [v for s in sinks for v in s.rows[k]] for k in SAMPLES_SCHEMA.names}, schema=SAMPLES_SCHEMA)


def _check_decoded(uri: str, info: VideoInfo, decoded: int, decode_error: Exception | None) -> None:
    """Raise VideoError when the decode came up short of what the header promises, or failed."""
    cause = f": {getattr(decode_error, 'strerror', None) or decode_error}" if decode_error else ""
    if decoded == 0:
        raise VideoError(f"{uri}: no frame decodes (corrupt or truncated stream{cause})") from decode_error
    if info.frame_count and decoded < info.frame_count - max(HEADER_SLACK_FRAMES, HEADER_SLACK_FRACTION * info.frame_count):
        raise VideoError(
            f"{uri}: the container header says {info.frame_count} frames but only {decoded} decode "
            f"(truncated file or corrupt metadata{cause})"
        ) from decode_error
    if decode_error is not None:
        raise VideoError(f"{uri}: decoding failed after {decoded} frames{cause}") from decode_error


def scan_video(
    store: Store, uri: str, cascade: CascadeConfig, sampling: SampleConfig, threads: int = 0,
    min_segment_frames: int = MIN_SEGMENT_FRAMES,
) -> VideoScan:
    """Decode `uri` once; raise VideoError (with the file and reason) if it is unusable.

    `threads` is this video's CPU budget (0: every CPU the process may use). With two or
    more, a long video is decoded in that many segments at once, each by a one-thread
    decoder followed by its own analysis (`segments.py`); the passes then decide on the
    frames in order. A video that cannot be split frame-exactly, a short one, or a budget
    of one CPU: one decoder thread running ahead of the analysis in the calling thread
    (`decoder_threads` splits the budget). The result is the same either way.
    """
    sampling.validate()
    threads = threads if threads > 0 else available_cpus()
    with open_video(store, uri) as container:
        info = probe(container, uri)
        stream = container.streams.video[0]
        detector = CascadeDetector(cascade, info.fps)
        min_frames = max(min_segment_frames, 2 * detector.extract.reach)
        count = segment_count(threads, info.frame_count, min_frames) if detector.segmentable else 1
        if count < 2:
            return _scan_whole(container, uri, info, detector, cascade, sampling, threads)
        try:
            plan = plan_segments(container, stream, count, info.frame_count, min_frames)
            note = "" if plan else f"no keyframe at least {min_frames} frames from the others to split at"
        except (SegmentMismatch, av.error.FFmpegError) as e:
            plan, note = None, f"not split: {e}"
    if plan is not None:
        try:
            return _scan_segments(store, uri, info, detector, cascade, sampling, *plan)
        except (SegmentMismatch, av.error.FFmpegError) as e:
            note = f"decoded again in one piece, the split failed: {e}"
            detector = CascadeDetector(cascade, info.fps)
    with open_video(store, uri) as container:
        scan = _scan_whole(container, uri, info, detector, cascade, sampling, threads)
    scan.split_note = note
    return scan


def _scan_whole(container: av.container.InputContainer, uri: str, info: VideoInfo, detector: CascadeDetector,
                cascade: CascadeConfig, sampling: SampleConfig, threads: int) -> VideoScan:
    """One decode in one piece, in a thread of its own ahead of the analysis here."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = decoder_threads(threads, info.width, info.height)
    sink = _FrameSink(uri, info, cascade, sampling, detector.push)
    index = -1
    try:
        with opencv_threads(1), read_ahead(lambda: container.decode(stream)) as frames:
            for frame in frames:
                index += 1
                sink.add(index, frame)
    except av.error.FFmpegError as e:
        # Whether a damaged stream raises or just ends early depends on FFmpeg's thread
        # count; the reason given is the same either way when the header says more frames.
        decode_error = e
    else:
        decode_error = None
    _check_decoded(uri, info, index + 1, decode_error)
    return VideoScan(info=info, frames_decoded=index + 1, boundaries=detector.finish(), samples=_samples_table([sink]),
                     passes=[p.name for p in cascade.passes])


def _scan_segments(store: Store, uri: str, info: VideoInfo, detector: CascadeDetector, cascade: CascadeConfig,
                   sampling: SampleConfig, clock: FrameClock, segments: list[Segment]) -> VideoScan:
    """The segments decoded at once, one thread each; features decided on in frame order."""
    extractors = [FeatureExtractor(cascade, info.fps) for _ in segments]
    features: list[list[FrameFeatures]] = [[] for _ in segments]
    sinks = [_FrameSink(uri, info, cascade, sampling, lambda i, small, k=k: features[k].append(extractors[k](i, small)))
             for k in range(len(segments))]
    stop = threading.Event()  # one segment failed: the others give up too
    failures: list[BaseException] = []  # the first is the reason; the others gave up

    def decode(k: int) -> int:
        end = segments[k].lo
        try:
            with open_video(store, uri) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = 1
                for index, frame in segment_frames(container, stream, clock, segments[k]):
                    if stop.is_set():
                        raise SegmentMismatch("another segment failed")
                    sinks[k].add(index, frame)
                    end = index + 1
        except BaseException as e:
            if not stop.is_set():
                failures.append(e)
            stop.set()
            raise
        return end

    with opencv_threads(1), ThreadPoolExecutor(len(segments), thread_name_prefix="segment") as pool:
        try:
            ends = list(pool.map(decode, range(len(segments))))
        except BaseException as e:
            raise failures[0] if failures else e
    for k in range(1, len(segments)):
        extractors[k].fill_missing(extractors[k - 1])
    for part in features:
        for f in part:
            detector.decide(f)
    _check_decoded(uri, info, ends[-1], None)
    return VideoScan(info=info, frames_decoded=ends[-1], boundaries=detector.finish(), samples=_samples_table(sinks),
                     passes=[p.name for p in cascade.passes], segments=len(segments))


def clip_id_for(video_sha256: str, start: int, end: int) -> str:
    return hashlib.sha256(f"{video_sha256}:{start}:{end}".encode()).hexdigest()[:20]


def clips_from_boundaries(
    scan: VideoScan, video_sha256: str, video_uri: str, min_clip_s: float
) -> tuple[list[dict], int]:
    """Clip rows between consecutive boundaries; returns (clips, number dropped as too short)."""
    fps, n = scan.info.fps, scan.frames_decoded
    edges = [Boundary(0, [])] + [b for b in scan.boundaries if 0 < b.frame < n] + [Boundary(n, [])]
    sample_frames = scan.samples.column("frame_index").to_pylist()
    clips, dropped = [], 0
    for a, b in zip(edges[:-1], edges[1:]):
        start, end = a.frame, b.frame
        if (end - start) / fps < min_clip_s:
            dropped += 1
            continue
        inside = [f for f in sample_frames if start <= f < end]
        clips.append(
            {
                "clip_id": clip_id_for(video_sha256, start, end),
                "video_sha256": video_sha256,
                "video_uri": video_uri,
                "start_frame": start,
                "end_frame": end,
                "start_s": start / fps,
                "end_s": end / fps,
                "duration_s": (end - start) / fps,
                "fps": fps,
                "width": scan.info.width,
                "height": scan.info.height,
                "boundary_passes": list(a.passes),
                "end_boundary_passes": list(b.passes),
                "sample_frames": inside,
            }
        )
    return clips, dropped


def samples_to_parquet(samples: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(samples, buf, compression="none")  # JPEG payloads do not compress further
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB uint8 array from stored JPEG bytes."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
