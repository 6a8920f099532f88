"""The Ray backend on a real loopback cluster (a head with no CPUs, two 1-CPU workers).

Per-video work (`process_video`) runs as Ray tasks: every item on a worker node, the same
clips, samples and errors as the local pool, a worker killed mid-item retried, a hung item
cancelled, and a cluster of several nodes refused local storage.
"""

import hashlib
import os
import shutil
import sys
import time

import pytest

import synth
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key
from svd_dag.curation.cuts import CascadeConfig
from svd_dag.curation.executor import LocalProcessExecutor
from svd_dag.curation.ray_executor import RayExecutor, RayOptions, SharedStorageError
from svd_dag.curation.video_scan import SampleConfig
from svd_dag.storage import Store


def die_once(task: ClipPassTask):
    """process_video, but the first attempt at `static.mp4` kills its worker process outright."""
    if task.uri.endswith("static.mp4"):
        try:
            os.close(os.open(os.path.join(task.storage_root, "died-once"), os.O_CREAT | os.O_EXCL))
            os._exit(1)
        except FileExistsError:
            pass
    return process_video(task)


def hang(task: ClipPassTask):
    """process_video, but `static.mp4` never returns (a decoder stuck on a bad stream)."""
    if task.uri.endswith("static.mp4"):
        time.sleep(3600)
    return process_video(task)


def die_always(task: ClipPassTask):
    """process_video, but `static.mp4` kills its worker process on every attempt."""
    if task.uri.endswith("static.mp4"):
        os._exit(1)
    return process_video(task)


@pytest.fixture(scope="module")
def raw(tmp_path_factory, bikes_path):
    folder = tmp_path_factory.mktemp("raw")
    shutil.copy(bikes_path, folder / "bikes.mp4")
    synth.static_video(str(folder / "static.mp4"))
    synth.moving_video(str(folder / "pan.mp4"))
    synth.text_file_named_mp4(str(folder / "broken.mp4"))
    return str(folder)


def tasks(raw: str, out: str, names=("bikes.mp4", "static.mp4", "pan.mp4", "broken.mp4")) -> list[ClipPassTask]:
    cascade, sampling = CascadeConfig(), SampleConfig()
    key = scan_key(cascade, sampling, 1.0, "test")
    return [ClipPassTask(os.path.join(raw, n), n, raw, out, cascade, sampling, 1.0, key, threads=1) for n in names]


def ray_executor(ray_cluster, **options) -> RayExecutor:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the dying functions above
    return RayExecutor(RayOptions(ray_cluster["address"], **{"shared_filesystem": True, **options}))


def comparable(outcome) -> tuple:
    """An outcome with the output root taken out of its paths, and its samples' bytes."""
    if not outcome.ok:
        return outcome.item.uri, outcome.error
    v = outcome.value
    with open(v["samples_uri"], "rb") as f:
        samples = f.read()
    clips = [{k: val for k, val in c.items() if k != "samples_uri"} for c in v["clips"]]
    return outcome.item.uri, clips, samples, v["boundaries"], v["frames_decoded"]


def test_every_video_runs_on_a_worker_node_with_the_local_pools_results(ray_cluster, raw, tmp_path):
    local = LocalProcessExecutor(2).map(process_video, tasks(raw, str(tmp_path / "local")))
    on_ray = ray_executor(ray_cluster).map(process_video, tasks(raw, str(tmp_path / "ray")))
    assert [o.item.uri for o in on_ray] == [o.item.uri for o in local]  # map keeps the input order
    assert [comparable(o) for o in on_ray] == [comparable(o) for o in local]
    assert {o.node for o in on_ray} <= ray_cluster["workers"] and ray_cluster["head"] not in {o.node for o in on_ray}
    broken = on_ray[-1]
    assert not broken.ok and "broken.mp4" in broken.error  # a VideoError names its file and is not retried


def test_a_worker_killed_mid_item_is_retried_and_only_that_item_can_fail(ray_cluster, raw, tmp_path):
    names = ("static.mp4", "pan.mp4")
    os.makedirs(tmp_path / "once")
    retried = list(ray_executor(ray_cluster, retries=1).imap(die_once, tasks(raw, str(tmp_path / "once"), names)))
    assert os.path.exists(tmp_path / "once" / "died-once")  # the first attempt really killed its worker
    assert sorted(o.item.uri for o in retried) == sorted(os.path.join(raw, n) for n in names)
    assert all(o.ok for o in retried), [o.error for o in retried]

    lost = {os.path.basename(o.item.uri): o for o in
            ray_executor(ray_cluster, retries=1).imap(die_always, tasks(raw, str(tmp_path / "always"), names))}
    assert lost["pan.mp4"].ok
    assert not lost["static.mp4"].ok and "Ray worker lost on each of 2 attempts" in lost["static.mp4"].error
    assert lost["static.mp4"].error.startswith(os.path.join(raw, "static.mp4"))


def test_a_hung_video_times_out_and_the_rest_go_on(ray_cluster, raw, tmp_path):
    items = tasks(raw, str(tmp_path), ("static.mp4", "pan.mp4", "bikes.mp4"))
    start = time.monotonic()
    out = {os.path.basename(o.item.uri): o for o in ray_executor(ray_cluster, item_timeout_s=15).imap(hang, items)}
    assert time.monotonic() - start < 120
    assert out["pan.mp4"].ok and out["bikes.mp4"].ok
    assert not out["static.mp4"].ok and "timed out after 15 s" in out["static.mp4"].error


def members(tar_path: str) -> dict[str, bytes]:
    """A shard's member files and their bytes (the tar headers carry write times)."""
    import tarfile

    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_clips_transcoded_into_shards_on_ray_have_the_local_pools_bytes(ray_cluster, raw, tmp_path):
    from svd_dag.curation.shards import EncodeSettings, shard_clips

    sha = {name: hashlib.sha256(open(os.path.join(raw, name), "rb").read()).hexdigest() for name in ("bikes.mp4", "pan.mp4")}
    clips = [{"clip_id": f"{name}-{start}", "video_uri": os.path.join(raw, name), "video_sha256": sha[name],
              "start_frame": start, "end_frame": start + 24, "fps": 25.0, "caption": name}
             for name in ("bikes.mp4", "pan.mp4") for start in (0, 30)]
    clips.append({**clips[0], "clip_id": "gone", "video_uri": os.path.join(raw, "missing.mp4")})
    settings = EncodeSettings(max_height=64, preset="ultrafast")

    def shards(executor, out: str):
        run = shard_clips(Store(out), clips, settings, "k", executor.map, raw, max_clips=3)
        tars = {os.path.basename(s["shard_uri"]): members(s["shard_uri"]) for s in run.rows}
        return [(r["clip_id"], r["shard_sha256"], os.path.basename(r["shard_uri"])) for r in run.rows], tars, \
            [(f["clip"]["clip_id"], f["reason"]) for f in run.failures]

    local = shards(LocalProcessExecutor(2), str(tmp_path / "local"))
    on_ray = shards(ray_executor(ray_cluster), str(tmp_path / "ray"))
    assert on_ray == local
    assert len(local[0]) == 4 and len(local[1]) == 2  # 4 clips in 2 shards of at most 3
    assert [c for c, _ in local[2]] == ["gone"] and "missing.mp4" in local[2][0][1]


def test_a_cluster_of_several_nodes_refuses_local_storage(ray_cluster, raw, tmp_path):
    executor = RayExecutor(RayOptions(ray_cluster["address"]), storage_roots=(raw, str(tmp_path)))
    with pytest.raises(SharedStorageError, match="2 worker nodes but storage .* is a local path"):
        executor.map(process_video, tasks(raw, str(tmp_path)))
