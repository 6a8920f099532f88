"""Bad files: each gets a clear reason naming the file; the batch survives."""

import os

import pytest

import synth
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key
from svd_dag.curation.cuts import CascadeConfig
from svd_dag.curation.executor import LocalProcessExecutor
from svd_dag.curation.inventory import inventory_one
from svd_dag.curation.media import VideoError
from svd_dag.curation.video_scan import SampleConfig, scan_video
from svd_dag.storage import Store


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    synth.zero_byte_file(str(d / "zero.mp4"))
    synth.truncated_video(str(d / "truncated.mp4"))
    synth.text_file_named_mp4(str(d / "notes.mp4"))
    synth.bad_metadata_video(str(d / "badmeta.mp4"))
    synth.one_frame_video(str(d / "oneframe.mp4"))
    synth.moving_video(str(d / "good.mp4"))
    return str(d)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("zero.mp4", "empty (0 bytes)"),
        ("truncated.mp4", "not a readable video container"),
        ("notes.mp4", "not a readable video container"),
    ],
)
def test_unopenable_files_are_quarantined_at_inventory(bad_dir, name, reason):
    store = Store(bad_dir)
    row = inventory_one(store, store.uri(name))
    assert row["status"] == "quarantined"
    assert name in row["reason"] and reason in row["reason"]


def test_header_promising_more_frames_than_decode_is_an_error(bad_dir):
    store = Store(bad_dir)
    row = inventory_one(store, store.uri("badmeta.mp4"))
    assert row["status"] == "ok"  # the header alone looks fine
    with pytest.raises(VideoError, match=r"badmeta\.mp4: the container header says 75 frames but only \d+ decode"):
        scan_video(store, store.uri("badmeta.mp4"), CascadeConfig(), SampleConfig())


def _task(bad_dir, out_dir, name):
    cascade, sampling = CascadeConfig(), SampleConfig()
    return ClipPassTask(os.path.join(bad_dir, name), f"sha-{name}", bad_dir, out_dir, cascade, sampling, 1.0,
                        scan_key(cascade, sampling, 1.0, "test"))


def test_one_bad_video_never_loses_the_batch(bad_dir, tmp_path):
    names = ["good.mp4", "badmeta.mp4", "oneframe.mp4", "notes.mp4"]
    outcomes = LocalProcessExecutor(max_workers=2).map(process_video, [_task(bad_dir, str(tmp_path), n) for n in names])
    by_name = {os.path.basename(o.item.uri): o for o in outcomes}
    assert by_name["good.mp4"].ok and len(by_name["good.mp4"].value["clips"]) == 1
    assert os.path.exists(by_name["good.mp4"].value["samples_uri"])
    assert "header says" in by_name["badmeta.mp4"].error
    assert "oneframe.mp4: no clip of at least 1 s (1 frames" in by_name["oneframe.mp4"].error
    assert "notes.mp4" in by_name["notes.mp4"].error
