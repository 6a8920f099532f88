"""The main command's corpus: the synthetic camera shots, made from real photographs, get the
camera-motion labels they were made with, through the same flow and rule curation uses."""

import os

import pytest

from svd_dag.curation.camera_motion import CameraRule, camera_label
from svd_dag.curation.media import probe_uri, read_frames
from svd_dag.curation.motion import clip_motion
from svd_dag.curation.video_scan import sample_indices
from svd_dag.demo_corpus import KNOWN_MOTION, make_demo_corpus
from svd_dag.settings import bundled_samples_dir
from svd_dag.storage import Store


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return make_demo_corpus(str(tmp_path_factory.mktemp("demo_raw")), str(bundled_samples_dir()))


def test_the_corpus_holds_the_bundled_footage_and_one_shot_per_camera_motion(corpus):
    names = set(os.listdir(corpus))
    assert set(KNOWN_MOTION) <= names
    assert {n for n in os.listdir(bundled_samples_dir()) if n.endswith(".mp4")} <= names
    assert not [n for n in names if not n.endswith(".mp4")]


@pytest.mark.parametrize("name", sorted(KNOWN_MOTION))
def test_each_synthetic_shot_gets_the_label_it_was_made_with(corpus, name):
    from svd_dag.assets.finetunes import CameraLabelConfig

    store = Store(corpus)
    uri = store.uri(name)
    info = probe_uri(store, uri)
    indices = list(sample_indices(info.fps, 2.0, info.frame_count))
    motion = clip_motion(read_frames(store, uri, indices, info.fps))
    defaults = CameraLabelConfig()
    rule = CameraRule(defaults.static_max_px, defaults.zoom_min_px, defaults.pan_min_px, defaults.pan_axis_ratio,
                      defaults.pan_coherence).validate()
    assert camera_label(motion["motion_score"], motion["mean_dx"], motion["mean_dy"], motion["divergence"],
                        rule) == KNOWN_MOTION[name], motion
