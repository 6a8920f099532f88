"""The frame annotators' one interface: a batch of clips in, one row per clip out.

Real models on real stored samples (bikes.mp4 and a synthetic cross-fade): CLIP (random
init, labelled), CRAFT (real weights) and CoCa (random init) score a batch of clips exactly
as they score each clip alone; a clip whose scoring fails fails alone; rows say who scored
them and on which device.
"""

import numpy as np
import pytest

import synth
from svd_dag.curation.annotate import score_clips
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key
from svd_dag.curation.cuts import CascadeConfig
from svd_dag.curation.devices import Placement
from svd_dag.curation.frame_annotators import CaptionSpec, ClipSpec, CraftSpec, MotionSpec
from svd_dag.curation.video_scan import SampleConfig
from svd_dag.storage import Store

CPU = Placement("cpu", "fp32", batch_frames=4)  # small batches: a batch of clips spans several forward passes


@pytest.fixture(scope="module")
def stored(tmp_path_factory, bikes_path):
    """(store, clips) of bikes.mp4 and a two-shot cross-fade, decoded by the `clips` pass."""
    root = tmp_path_factory.mktemp("annotate")
    synth.crossfade_video(str(root / "fade.mp4"))
    cascade, sampling = CascadeConfig(), SampleConfig()
    clips = []
    for uri, sha in ((bikes_path, "bikes"), (str(root / "fade.mp4"), "fade")):
        out = process_video(ClipPassTask(uri, sha, str(root), str(root / "out"), cascade, sampling, 1.0,
                                         scan_key(cascade, sampling, 1.0, "t")))
        clips += out["clips"]
    assert len(clips) >= 4
    return Store(str(root / "out")), clips


def scored(store, clips, spec):
    scorer = spec.build()
    return score_clips(store, clips, spec.which, scorer, spec.identity())


def one_by_one(store, clips, spec):
    scorer = spec.build()
    rows = []
    for clip in clips:
        run = score_clips(store, [clip], spec.which, scorer, spec.identity())
        assert not run.failures, run.failures
        rows += run.rows
    return rows


def test_clip_embeddings_of_a_batch_equal_each_clip_alone(stored):
    store, clips = stored
    spec = ClipSpec("ViT-B-32", None, CPU)
    batch = scored(store, clips, spec)
    assert not batch.failures and [r["clip_id"] for r in batch.rows] == [c["clip_id"] for c in clips]
    for together, alone in zip(batch.rows, one_by_one(store, clips, spec)):
        assert together["frames"] == alone["frames"] == 3
        # measured: max abs difference ~2e-7 (float32 reduction order)
        np.testing.assert_allclose(together["vectors"], alone["vectors"], atol=1e-5)
    row = batch.rows[0]
    assert (row["device"], row["dtype"], row["weights"]) == ("cpu", "fp32", "random")
    assert row["model_version"] == "ViT-B-32@random-init-seed0" and row["annotator"] == "open_clip"


def test_text_areas_of_a_batch_equal_each_clip_alone(stored):
    store, clips = stored
    spec = CraftSpec(Placement("cpu", "fp32"), cpu_batch_frames=2)  # frames of different clips in one forward
    batch = scored(store, clips, spec)
    assert not batch.failures
    for together, alone in zip(batch.rows, one_by_one(store, clips, spec)):
        assert together["text_area"] == pytest.approx(alone["text_area"], abs=0.005)
        assert together["frame_text_areas"] == pytest.approx(alone["frame_text_areas"], abs=0.005)
    assert batch.rows[0]["model_version"].startswith("craft_mlt_25k@sha256:")
    assert (batch.rows[0]["device"], batch.rows[0]["weights"]) == ("cpu", "pretrained")


def test_captions_of_a_batch_equal_each_clip_alone(stored):
    store, clips = stored
    spec = CaptionSpec(None, "coca_ViT-B-32", coca_max_tokens=8, placement=Placement("cpu", "fp32", batch_frames=3))
    batch = scored(store, clips, spec)
    assert not batch.failures
    assert [r["caption"] for r in batch.rows] == [r["caption"] for r in one_by_one(store, clips, spec)]
    assert all(r["caption"] for r in batch.rows) and batch.rows[0]["weights"] == "random"


def test_a_clip_that_cannot_be_scored_fails_alone_and_the_batch_keeps_the_rest(stored):
    store, clips = stored
    one_sample = dict(clips[0], clip_id="one-sample", sample_frames=list(clips[0]["sample_frames"])[:1])
    missing = dict(clips[1], clip_id="missing", sample_frames=[10**6])
    spec = MotionSpec(128, "farneback-test", workers=2)
    run = scored(store, [*clips, one_sample, missing], spec)
    assert [r["clip_id"] for r in run.rows] == [c["clip_id"] for c in clips]
    reasons = {f["clip_id"]: f["reason"] for f in run.failures}
    assert set(reasons) == {"one-sample", "missing"}
    assert "farneback failed: ValueError: motion needs at least 2 sampled frames" in reasons["one-sample"]
    assert "missing from" in reasons["missing"] and reasons["missing"].startswith(clips[1]["video_uri"])
    assert run.rows[0]["device"] == "cpu" and run.rows[0]["model_version"] == "farneback-test"


def test_a_device_that_cannot_work_is_refused_where_it_is_given():
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        Placement("gpu0").validate()
    with pytest.raises(ValueError, match="dtype must be auto or one of fp32, fp16, bf16"):
        Placement("cpu", "int4").validate()
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA device"):
            Placement("cuda").resolve()
