"""Motion score: static scenes score far below moving ones."""

import pytest

import synth
from svd_dag.curation.annotate import iter_clip_frames
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key
from svd_dag.curation.cuts import CascadeConfig
from svd_dag.curation.motion import clip_motion
from svd_dag.curation.video_scan import SampleConfig
from svd_dag.storage import Store


def _motion(tmp_path, name):
    cascade, sampling = CascadeConfig(), SampleConfig()
    out = process_video(ClipPassTask(str(tmp_path / name), name, str(tmp_path), str(tmp_path / "out"), cascade,
                                     sampling, 1.0, scan_key(cascade, sampling, 1.0, "t")))
    [(clip, frames, error)] = list(iter_clip_frames(Store(str(tmp_path / "out")), out["clips"], "all"))
    assert error is None
    return clip_motion(frames)


def test_static_scores_far_below_moving(tmp_path):
    synth.static_video(str(tmp_path / "static.mp4"))
    # 0.4 px/frame = 5 px per 0.5 s pair: within Farneback's reach at 3 pyramid levels
    synth.moving_video(str(tmp_path / "moving.mp4"), speed=0.4)
    still, moving = _motion(tmp_path, "static.mp4"), _motion(tmp_path, "moving.mp4")
    assert still["motion_score"] < 0.05
    assert moving["motion_score"] > 20 * max(still["motion_score"], 0.01)
    # The camera pans right, so content moves left: negative dx, no vertical drift.
    assert moving["mean_dx"] < -0.5
    assert abs(moving["mean_dy"]) < 0.1 * abs(moving["mean_dx"])


def test_motion_needs_two_frames():
    with pytest.raises(ValueError, match="at least 2 sampled frames"):
        clip_motion([synth.texture(0)])


def test_scores_keep_their_unit_at_any_flow_width():
    # A pan of 0.4 px/frame on a 320-wide frame is 5 px per 0.5 s pair in the motion unit,
    # whatever width the flow is computed at.
    frames = synth.pan_frames(7, 26, 0.4)[::12]
    scores = {w: clip_motion(frames, w) for w in (320, 256, 160)}
    for w, m in scores.items():
        assert m["motion_score"] == pytest.approx(5.0, rel=0.15), (w, m)
        assert m["mean_dx"] == pytest.approx(-5.0, rel=0.15), (w, m)
