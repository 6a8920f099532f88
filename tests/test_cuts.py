"""Cascaded cut detection on real footage and on synthetic transitions."""


import pytest

import synth
from svd_dag.curation.cuts import CascadeConfig, PassConfig
from svd_dag.curation.video_scan import SampleConfig, clips_from_boundaries, scan_video
from svd_dag.storage import Store

BIKES_CUTS = [30, 76, 137, 187, 242]  # first frame of each new shot


@pytest.fixture(scope="module")
def bikes_scan(samples_dir):
    store = Store(samples_dir)
    return scan_video(store, store.uri("bikes.mp4"), CascadeConfig(), SampleConfig())


def test_bikes_cascade_finds_every_hard_cut_and_nothing_else(bikes_scan):
    found = [b.frame for b in bikes_scan.boundaries]
    assert len(found) == len(BIKES_CUTS), found
    for true, got in zip(BIKES_CUTS, found):
        assert abs(true - got) <= 1, (true, got)


def test_bikes_boundaries_record_their_passes(bikes_scan):
    for b in bikes_scan.boundaries:
        assert b.passes[0] == "native"  # hard cuts are on the native frame
        assert set(b.passes) <= {"native", "15fps", "8fps"}
    assert any(len(b.passes) > 1 for b in bikes_scan.boundaries)


def test_low_fps_false_cuts_on_fast_motion_are_rejected(samples_dir):
    """Low-rate passes alone fire on bikes' fast motion; the merge must not keep those."""
    store = Store(samples_dir)
    accept_all = CascadeConfig(confirm_hist_distance=1e-6)  # histogram confirmation effectively off
    loose = [b.frame for b in scan_video(store, store.uri("bikes.mp4"), accept_all, SampleConfig()).boundaries]
    false_cuts = [f for f in loose if all(abs(f - t) > 1 for t in BIKES_CUTS)]
    assert false_cuts, "expected the low-fps passes to fire on fast motion without confirmation"
    assert all(any(abs(f - t) <= 1 for t in BIKES_CUTS) for f in loose if f not in false_cuts)


def test_slow_crossfade_is_found_by_a_low_fps_pass(tmp_path):
    path, middle = synth.crossfade_video(str(tmp_path / "fade.mp4"), fade_frames=8)
    store = Store(str(tmp_path))
    scan = scan_video(store, path, CascadeConfig(), SampleConfig())
    assert len(scan.boundaries) == 1, [(b.frame, b.passes) for b in scan.boundaries]
    b = scan.boundaries[0]
    assert "native" not in b.passes and set(b.passes) & {"15fps", "8fps"}
    assert abs(b.frame - middle) <= 4


def test_native_pass_alone_misses_the_crossfade(tmp_path):
    path, _ = synth.crossfade_video(str(tmp_path / "fade.mp4"), fade_frames=8)
    store = Store(str(tmp_path))
    native_only = CascadeConfig(passes=(PassConfig("native", None, 27.0),))
    assert scan_video(store, path, native_only, SampleConfig()).boundaries == []


def test_clips_are_stable_references_and_short_ones_are_dropped(bikes_scan):
    clips, dropped = clips_from_boundaries(bikes_scan, "abc", "bikes.mp4", min_clip_s=1.0)
    assert dropped == 1  # 242..250 is 0.32 s
    assert [c["start_frame"] for c in clips] == [0] + [b.frame for b in bikes_scan.boundaries][:-1]
    again, _ = clips_from_boundaries(bikes_scan, "abc", "bikes.mp4", min_clip_s=1.0)
    assert [c["clip_id"] for c in clips] == [c["clip_id"] for c in again]
    assert len({c["clip_id"] for c in clips}) == len(clips)
    for c in clips:
        assert c["end_frame"] > c["start_frame"]
        assert all(c["start_frame"] <= f < c["end_frame"] for f in c["sample_frames"])
        assert len(c["sample_frames"]) >= 2


@pytest.mark.parametrize(
    "cfg, message",
    [
        (CascadeConfig(passes=()), "at least one pass"),
        (CascadeConfig(passes=(PassConfig("low", 8.0, 17.0),)), "native fps"),
        (CascadeConfig(passes=(PassConfig("native", None, 27.0, detector="magic"),)), "detector must be one of"),
        (CascadeConfig(passes=(PassConfig("native", None, -1.0),)), "threshold must be > 0"),
    ],
)
def test_wrong_config_is_a_clear_error(cfg, message):
    with pytest.raises(ValueError, match=message):
        cfg.validate()


def test_content_score_is_pyscenedetects_and_the_detector_decides_on_it(bikes_path):
    import av
    import cv2
    from scenedetect import ContentDetector, FrameTimecode

    from svd_dag.curation.cuts import HsvContentDetector, content_score

    with av.open(bikes_path) as c:
        frames = [f.to_ndarray(format="bgr24") for _, f in zip(range(40), c.decode(video=0))]
    ours, theirs = HsvContentDetector(27.0, 0.5), ContentDetector(threshold=27.0, min_scene_len=0.5)
    hsv = [cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV) for bgr in frames]
    cuts_ours, cuts_theirs = [], []
    for i in range(10, 36):  # spans the hard cut at frame 30
        tc = FrameTimecode(i, fps=25.0)
        cuts_theirs += theirs.process_frame(tc, frames[i])
        score = 0.0 if i == 10 else content_score(hsv[i], hsv[i - 1])
        assert score == pytest.approx(theirs._frame_score, rel=1e-9, abs=1e-9)
        cuts_ours += ours.process_frame(tc, score)
    assert [c.frame_num for c in cuts_ours] == [c.frame_num for c in cuts_theirs] == [30]


KOALA = PassConfig("koala", None, 3.0, "zscore")


def test_zscore_pass_finds_the_crossfade_the_native_pass_misses(tmp_path):
    """Koala-36M's test (a frame change > 3 sigma above the last 2 s) as a fourth pass."""
    path, middle = synth.crossfade_video(str(tmp_path / "fade.mp4"), fade_frames=8)
    native_and_koala = CascadeConfig(passes=(PassConfig("native", None, 27.0), KOALA))
    [b] = scan_video(Store(str(tmp_path)), path, native_and_koala, SampleConfig()).boundaries
    assert b.passes == ["koala"] and abs(b.frame - middle) <= 4


def test_zscore_pass_keeps_bikes_precision_and_ignores_steady_camera_motion(samples_dir, tmp_path):
    store = Store(samples_dir)
    with_koala = CascadeConfig(passes=CascadeConfig().passes + (KOALA,))
    found = scan_video(store, store.uri("bikes.mp4"), with_koala, SampleConfig()).boundaries
    assert [b.frame for b in found] == BIKES_CUTS and sum("koala" in b.passes for b in found) >= 3
    unconfirmed = CascadeConfig(passes=(PassConfig("native", None, 27.0), KOALA), confirm_hist_distance=1e-6)
    for make in (synth.static_video, synth.moving_video, synth.zoom_video):  # no cut, even unconfirmed
        path = str(tmp_path / f"{make.__name__}.mp4")
        make(path)
        assert scan_video(Store(str(tmp_path)), path, unconfirmed, SampleConfig()).boundaries == [], make.__name__
