"""Decoding a video in segments at once: the same scan as one decode, or one decode instead."""

import av
import pytest

import synth
from svd_dag.curation.cuts import CascadeConfig, PassConfig
from svd_dag.curation.media import VideoError
from svd_dag.curation.segments import plan_segments, segment_count
from svd_dag.curation.video_scan import SampleConfig, scan_video
from svd_dag.storage import Store

KOALA = PassConfig("koala", None, 3.0, "zscore")
WITH_KOALA = CascadeConfig(passes=CascadeConfig().passes + (KOALA,))


def _result(scan):
    return ([(b.frame, b.passes) for b in scan.boundaries], scan.frames_decoded,
            scan.samples.column("frame_index").to_pylist(), scan.samples.column("jpeg").to_pylist())


@pytest.mark.parametrize("cascade", [CascadeConfig(), WITH_KOALA], ids=["default", "with-koala"])
def test_segments_give_exactly_the_scan_of_one_decode(samples_dir, cascade):
    """bikes' keyframes sit on its cuts (30, 76, 137, 187, 242), so the seams fall on shot
    changes, where every pass's score crosses from one segment into the next."""
    store = Store(samples_dir)
    whole = scan_video(store, "bikes.mp4", cascade, SampleConfig(), threads=1)
    assert whole.segments == 1
    assert [b.frame for b in whole.boundaries] == [30, 76, 137, 187, 242]
    for budget in (2, 3, 4):
        split = scan_video(store, "bikes.mp4", cascade, SampleConfig(), threads=budget, min_segment_frames=50)
        assert 2 <= split.segments <= budget  # seams only where a keyframe leaves 50 frames each side
        assert _result(split) == _result(whole)


def test_plan_covers_every_frame_once_from_keyframes(tmp_path):
    path = synth.write_video(str(tmp_path / "pan.mp4"), synth.pan_frames(3, 300, 2.0), keyint=40)
    with av.open(path) as c:
        stream = c.streams.video[0]
        clock, segments = plan_segments(c, stream, 4, 300, min_frames=60)
    assert len(segments) >= 2
    assert segments[0].seek_pts is None and segments[0].lo == 0 and segments[-1].hi is None
    for before, after in zip(segments, segments[1:]):
        assert before.hi == after.lo and after.lo % 40 == 0  # seams on keyframes, no gap, no overlap
        assert after.lo - before.lo >= 60 and clock.index(after.seek_pts) == after.lo
    assert 300 - segments[-1].lo >= 60


def test_no_split_when_the_video_is_short_or_the_budget_one_cpu():
    assert segment_count(8, 299) == 1
    assert segment_count(1, 100_000) == 1
    assert segment_count(4, 900) == 3


@pytest.mark.parametrize("regular_until", [0, 120], ids=["irregular-from-the-start", "irregular-after-the-seam"])
def test_a_video_whose_timestamps_leave_the_frame_grid_is_decoded_in_one_piece(tmp_path, regular_until):
    """Dropped frames (variable frame rate): a timestamp no longer says the frame's index.
    The plan cannot tell (keyframe timestamps still sit on the grid); the segment that meets
    the gap does, and the video is decoded in one piece instead."""
    n, budget = 200, 2
    pts = [i + max(0, i - regular_until) // 7 for i in range(n)]  # a dropped slot every 7 frames
    path = synth.write_video(str(tmp_path / "vfr.mp4"), synth.pan_frames(4, n, 2.0), keyint=25, pts=pts)
    with av.open(path) as c:
        assert len(plan_segments(c, c.streams.video[0], budget, n, min_frames=40)[1]) == 2
    store = Store(str(tmp_path))
    whole = scan_video(store, "vfr.mp4", CascadeConfig(), SampleConfig(), threads=1)
    split = scan_video(store, "vfr.mp4", CascadeConfig(), SampleConfig(), threads=budget, min_segment_frames=40)
    assert split.segments == 1 and whole.frames_decoded == n
    assert split.split_note.startswith("decoded again in one piece, the split failed: frame ")
    assert _result(split) == _result(whole)


def test_an_adaptive_pass_decodes_in_one_piece(samples_dir):
    """AdaptiveDetector scores frames itself, so its features cannot be extracted apart."""
    cascade = CascadeConfig(passes=(PassConfig("native", None, 27.0), PassConfig("adaptive", 8.0, 3.0, "adaptive")))
    store = Store(samples_dir)
    split = scan_video(store, "bikes.mp4", cascade, SampleConfig(), threads=3, min_segment_frames=50)
    assert split.segments == 1 and split.split_note == ""
    assert _result(split) == _result(scan_video(store, "bikes.mp4", cascade, SampleConfig(), threads=1))


def test_a_stream_cut_short_gets_the_same_reason_whether_split_or_not(tmp_path):
    path = synth.write_video(str(tmp_path / "cut.mp4"), synth.pan_frames(6, 300, 2.0), faststart=True, keyint=30)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * 0.6)])
    store = Store(str(tmp_path))
    reasons = []
    for threads, min_frames in ((1, 300), (3, 50)):
        with pytest.raises(VideoError) as e:
            scan_video(store, "cut.mp4", CascadeConfig(), SampleConfig(), threads=threads, min_segment_frames=min_frames)
        reasons.append(str(e.value).split(" decode")[0])
    assert "the container header says 300 frames but only" in reasons[0]
    assert reasons[1] == reasons[0]


def test_samples_faster_than_the_video_take_every_frame_once(samples_dir):
    """A sample rate above the frame rate repeats grid indices; every frame is sampled, once."""
    scan = scan_video(Store(samples_dir), "bikes.mp4", CascadeConfig(), SampleConfig(sample_fps=30.0), threads=1)
    assert scan.samples.column("frame_index").to_pylist() == list(range(250))
