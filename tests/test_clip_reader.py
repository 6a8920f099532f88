"""Reading clip frames by reference: the frames match what a full decode sees."""

import av
import numpy as np
import pytest

import synth
from svd_dag.curation.media import VideoError
from svd_dag.storage import Store
from svd_dag.curation.media import read_frames
from svd_dag.training.clip_reader import frame_indices, resize_center_crop


def _all_frames(path):
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_seeking_reads_the_same_frames_as_a_full_decode(bikes_path, samples_dir):
    full = _all_frames(bikes_path)
    indices = [150, 153, 156, 159, 240]
    got = read_frames(Store(samples_dir), bikes_path, indices, fps=25.0)
    for i, frame in zip(indices, got):
        assert np.array_equal(frame, full[i]), i


def test_frame_indices_stride_and_bounds():
    assert frame_indices(30, 76, 25.0, 4, 8.0) == [30, 33, 36, 39]
    assert frame_indices(30, 76, 25.0, 4, 8.0, offset=100) == [66, 69, 72, 75]  # clamped to end at 75
    # too short for the stride: the stride shrinks, frames stay inside the clip
    idx = frame_indices(0, 10, 25.0, 5, 5.0)
    assert idx[0] >= 0 and idx[-1] < 10 and len(set(idx)) == 5
    with pytest.raises(ValueError, match="shorter than the 14 frames"):
        frame_indices(0, 10, 25.0, 14, 5.0)


def test_unreadable_frames_are_a_clear_error(tmp_path):
    path = synth.static_video(str(tmp_path / "s.mp4"), seconds=1.0)
    with pytest.raises(VideoError, match=r"s\.mp4: frames \[500\] did not decode"):
        read_frames(Store(str(tmp_path)), path, [500], fps=25.0)


def test_resize_center_crop_keeps_aspect():
    img = np.zeros((272, 640, 3), np.uint8)
    img[:, 300:340] = 255  # a vertical bar in the middle
    out = resize_center_crop(img, 64, 96)
    assert out.shape == (64, 96, 3)
    assert out[:, 48].mean() > 200 and out[:, 5].mean() < 10
