"""Threads in per-video work: the decoder reading ahead, and flow scored by several threads.

Neither may change a result: the cut list, the stored samples and the motion rows are the
same for any thread budget.
"""

import threading

import cv2
import pytest

import synth
from svd_dag.curation.annotate import score_clips
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key
from svd_dag.curation.cuts import CascadeConfig
from svd_dag.curation.executor import LocalProcessExecutor
from svd_dag.curation.frame_annotators import Identity, MotionSpec
from svd_dag.curation.threads import available_cpus, opencv_threads, read_ahead
from svd_dag.curation.video_scan import SampleConfig, decoder_threads, scan_video
from svd_dag.storage import Store


def test_read_ahead_yields_everything_in_order_across_batches():
    with read_ahead(lambda: iter(range(1003)), batch=8, depth=2) as items:
        assert list(items) == list(range(1003))


def test_read_ahead_raises_the_producers_error_after_the_items_before_it():
    def produce():
        yield from range(13)
        raise OSError("disk went away at item 13")

    got = []
    with pytest.raises(OSError, match="item 13"):
        with read_ahead(produce, batch=4) as items:
            for x in items:
                got.append(x)
    assert got == list(range(13))


def test_leaving_read_ahead_early_stops_and_joins_the_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    def take_one_and_leave():
        with read_ahead(endless, batch=4, depth=2) as items:
            assert next(items) == 0

    # In a thread of its own, so that a producer that never stops fails the test instead of hanging it.
    consumer = threading.Thread(target=take_one_and_leave, daemon=True)
    consumer.start()
    consumer.join(timeout=10)
    assert not consumer.is_alive(), "leaving read_ahead did not stop the producer"
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]  # joined, not left running
    assert len(produced) <= 4 * (2 + 2)  # what fits in the queue plus the batch in hand, not endless


def test_opencv_threads_is_restored_after_the_block():
    before = cv2.getNumThreads()
    with pytest.raises(RuntimeError):
        with opencv_threads(1):
            assert cv2.getNumThreads() == 1
            raise RuntimeError("boom")
    assert cv2.getNumThreads() == before


def test_one_video_gets_every_cpu_and_a_batch_shares_them():
    cpus = available_cpus()
    executor = LocalProcessExecutor(max_workers=0)
    assert executor.threads_per_item(1) == cpus
    assert executor.threads_per_item(1000) == 1
    assert LocalProcessExecutor(max_workers=1).threads_per_item(50) == cpus


def test_small_frames_keep_a_cpu_for_the_analysis_and_large_ones_give_all_to_the_decoder():
    assert decoder_threads(2, 640, 272) == 1
    assert decoder_threads(8, 640, 480) == 7
    assert decoder_threads(2, 1920, 816) == 2
    assert decoder_threads(1, 640, 272) == decoder_threads(1, 1920, 816) == 1


def test_the_motion_asset_default_is_the_flow_width_the_domain_code_documents():
    from svd_dag.assets.annotators import MotionConfig
    from svd_dag.curation.motion import FLOW_WIDTH

    assert MotionConfig().flow_width == FLOW_WIDTH


def test_scan_is_the_same_for_any_thread_budget(samples_dir):
    store = Store(samples_dir)
    scans = [scan_video(store, store.uri("bikes.mp4"), CascadeConfig(), SampleConfig(), threads=t) for t in (1, 2, 4)]
    first = scans[0]
    assert [b.frame for b in first.boundaries] == [30, 76, 137, 187, 242]
    for other in scans[1:]:
        assert [(b.frame, b.passes) for b in other.boundaries] == [(b.frame, b.passes) for b in first.boundaries]
        assert other.frames_decoded == first.frames_decoded == 250
        assert other.samples.column("jpeg").to_pylist() == first.samples.column("jpeg").to_pylist()


def test_motion_rows_are_the_same_with_one_thread_or_several(tmp_path):
    synth.crossfade_video(str(tmp_path / "fade.mp4"))  # two moving shots: two clips
    cascade, sampling = CascadeConfig(), SampleConfig()
    out = process_video(ClipPassTask(str(tmp_path / "fade.mp4"), "fade", str(tmp_path), str(tmp_path / "out"),
                                     cascade, sampling, 1.0, scan_key(cascade, sampling, 1.0, "t")))
    store = Store(str(tmp_path / "out"))
    broken = dict(out["clips"][0], clip_id="broken", sample_frames=[10**6])  # no such sample: a failure row
    clips = out["clips"] + [broken]
    assert len(out["clips"]) == 2

    def run(workers):
        spec = MotionSpec(256, "v", workers)
        return score_clips(store, clips, spec.which, spec.build(), Identity("farneback", "v", "n/a"), threads=workers)

    serial, threaded = run(1), run(3)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "annotated_at"} for r in rows]  # noqa: E731
    assert strip(threaded.rows) == strip(serial.rows)
    assert [r["clip_id"] for r in serial.rows] == [c["clip_id"] for c in out["clips"]]
    assert [f["clip_id"] for f in threaded.failures] == ["broken"]
    assert "missing from" in threaded.failures[0]["reason"]
