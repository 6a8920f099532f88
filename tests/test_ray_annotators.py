"""Frame annotators on a pool of Ray actors (loopback cluster: two 1-CPU worker nodes).

Each actor builds its scorer once and scores batch after batch; an actor whose process
dies mid-batch is restarted and the batch re-run; a model that cannot load on the device
asked for fails the run before any batch is scored.
"""

import dataclasses
import os
import sys
from typing import ClassVar

import pytest

import synth
from svd_dag.curation.annotate import score_in_process
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key
from svd_dag.curation.cuts import CascadeConfig
from svd_dag.curation.devices import Placement
from svd_dag.curation.frame_annotators import ClipSpec, CraftSpec, MotionSpec
from svd_dag.curation.ray_annotators import score_on_ray
from svd_dag.curation.ray_executor import RayOptions
from svd_dag.curation.video_scan import SampleConfig
from svd_dag.storage import Store


@dataclasses.dataclass(frozen=True)
class DyingMotionSpec:
    """Farneback, but the first batch scored anywhere kills its actor's process (a marker
    file, created once, says it happened)."""

    marker: str
    which: ClassVar[str] = "all"

    def identity(self):
        return MotionSpec(128, "farneback-dying").identity()

    def build(self):
        return DyingScorer(self.marker)


class DyingScorer:
    def __init__(self, marker: str):
        self.inner = MotionSpec(128, "farneback-dying", workers=1).build()
        self.placement, self.marker = self.inner.placement, marker

    def score(self, frames_per_clip):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            os._exit(1)
        except FileExistsError:
            return self.inner.score(frames_per_clip)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("actors")
    synth.crossfade_video(str(root / "fade.mp4"))
    synth.moving_video(str(root / "pan.mp4"))
    cascade, sampling = CascadeConfig(), SampleConfig()
    clips = []
    for name in ("fade.mp4", "pan.mp4"):
        clips += process_video(ClipPassTask(str(root / name), name, str(root), str(root / "out"), cascade, sampling,
                                            1.0, scan_key(cascade, sampling, 1.0, "t")))["clips"]
    return root, Store(str(root / "out")), clips


def options(ray_cluster, **kw) -> RayOptions:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the dying scorer above
    return RayOptions(ray_cluster["address"], shared_filesystem=True, **kw)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "annotated_at"} for r in rows]


def test_an_actor_that_dies_mid_batch_is_restarted_and_its_batch_rerun(ray_cluster, stored):
    root, store, clips = stored
    batches = [clips[i:i + 1] for i in range(len(clips))]
    spec = DyingMotionSpec(str(root / "died"))
    out = list(score_on_ray(options(ray_cluster, retries=1), spec, spec.identity(), store, actors=2)(iter(batches)))
    assert os.path.exists(root / "died")  # one actor really died
    assert [b for b, _ in out] and sorted(c["clip_id"] for b, _ in out for c in b) == sorted(c["clip_id"] for c in clips)
    assert all(not run.failures for _, run in out)
    assert {run.node for _, run in out} <= ray_cluster["workers"]
    reference = MotionSpec(128, "farneback-dying", workers=1)
    here = {r["clip_id"]: r for _, run in score_in_process(reference, spec.identity(), store)(iter(batches))
            for r in run.rows}
    assert sorted(strip(r for _, run in out for r in run.rows), key=lambda r: r["clip_id"]) == \
        [strip([here[k]])[0] for k in sorted(here)]


def test_actors_asking_for_half_a_gpu_share_the_gpu_node(ray_cluster, stored):
    _, store, clips = stored
    spec = ClipSpec("ViT-B-32", None, Placement())  # auto: each actor resolves its own device
    stream = score_on_ray(options(ray_cluster), spec, spec.identity(), store, cpus_per_actor=0.5, gpus_per_actor=0.5)
    out = list(stream(iter([clips[:2], clips[2:]])))
    assert {run.node for _, run in out} == {ray_cluster["gpu_node"]}  # two actors (1 GPU / 0.5), both there
    assert sorted(r["clip_id"] for _, run in out for r in run.rows) == sorted(c["clip_id"] for c in clips)
    assert {(r["device"], r["dtype"]) for _, run in out for r in run.rows} == {("cpu", "fp32")}  # no real GPU


def test_a_model_that_cannot_load_on_its_device_fails_before_any_batch(ray_cluster, stored):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _, store, clips = stored
    spec = CraftSpec(Placement("cuda", "bf16"))
    identity = spec.identity()
    with pytest.raises(Exception, match="sees no CUDA device"):
        list(score_on_ray(options(ray_cluster, retries=0), spec, identity, store, actors=1)(iter([clips])))
