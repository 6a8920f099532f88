"""Write-once on a real S3 server (moto's, on 127.0.0.1), where nothing can be renamed into
place: a file is created by a conditional PUT, so of two writers racing on one new name
exactly one wins; a folder counts once its `.published` listing exists, so an upload that
died is finished by the next attempt and a published folder is never written over."""

import hashlib
import json
import secrets
import threading

import pytest

from svd_dag.storage import PUBLISHED, ImmutableArtefactError, Store


@pytest.fixture
def bucket_store(s3_endpoint) -> Store:
    bucket = f"once-{secrets.token_hex(4)}"
    store = Store(f"s3://{bucket}/root")
    store.fs.mkdir(bucket)
    return store


def _race(n: int, work) -> dict:
    barrier, results = threading.Barrier(n), {}

    def run(i):
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - the outcome of each writer is what is tested
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_racing_writers_of_one_new_name_on_s3_leave_exactly_one_winner(bucket_store, tmp_path):
    files = []
    for i in range(8):
        files.append(tmp_path / f"manifest-{i}.parquet")
        files[-1].write_bytes(f"manifest of writer {i}\n".encode() * 1000)
    results = _race(8, lambda i: bucket_store.put_file_once(str(files[i]), "lvd_f/v1/manifest.parquet"))
    winners = [i for i, r in results.items() if isinstance(r, str)]
    losers = [r for r in results.values() if not isinstance(r, str)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ImmutableArtefactError) and "already exists with other content" in str(r) for r in losers)
    assert bucket_store.read_bytes("lvd_f/v1/manifest.parquet") == files[winners[0]].read_bytes()


def test_racing_writers_of_the_same_bytes_on_s3_all_succeed(bucket_store, tmp_path):
    local = tmp_path / "report.json"
    local.write_bytes(b'{"kept": 3}')
    results = _race(6, lambda i: bucket_store.write_once("lvd_f/v2/filter_report.json", local.read_bytes()))
    assert set(results.values()) == {bucket_store.uri("lvd_f/v2/filter_report.json")}


def _checkpoint_folder(path, weights: bytes):
    (path / "unet").mkdir(parents=True)
    (path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    (path / "svd_dag_training.json").write_text(json.dumps({"weights_digest": hashlib.sha256(weights).hexdigest()}))
    (path / "samples").mkdir()
    (path / "samples" / "a.mp4").write_bytes(b"video" * 100)
    return path


def test_a_folder_upload_that_died_is_finished_and_a_published_folder_is_refused(bucket_store, tmp_path):
    folder = _checkpoint_folder(tmp_path / "ckpt", secrets.token_bytes(4096))
    rel = "checkpoints/stage2_video_checkpoint/k1"
    # What an upload killed half-way leaves: some files (one of them cut short), no listing.
    bucket_store.fs.put_file(str(folder / "svd_dag_training.json"), bucket_store.uri(rel, "svd_dag_training.json"))
    bucket_store.write_bytes(f"{rel}/unet/diffusion_pytorch_model.safetensors", b"first half")
    assert not bucket_store.folder_published(rel)

    assert bucket_store.put_dir(str(folder), rel) == bucket_store.uri(rel)
    assert bucket_store.folder_published(rel)
    listing = json.loads(bucket_store.read_bytes(f"{rel}/{PUBLISHED}"))["files"]
    assert sorted(listing) == ["samples/a.mp4", "svd_dag_training.json", "unet/diffusion_pytorch_model.safetensors"]
    for name, entry in listing.items():
        stored = bucket_store.read_bytes(f"{rel}/{name}")
        assert stored == (folder / name).read_bytes()  # the cut-short file was written whole
        assert entry == {"size": len(stored), "sha256": hashlib.sha256(stored).hexdigest()}

    with pytest.raises(ImmutableArtefactError, match="written once, never replaced"):
        bucket_store.put_dir(str(_checkpoint_folder(tmp_path / "other", b"other weights")), rel)
    assert bucket_store.read_bytes(f"{rel}/unet/diffusion_pytorch_model.safetensors") == \
        (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_a_local_folder_is_published_whole_by_one_rename(tmp_path):
    store = Store(str(tmp_path / "storage"))
    folder = _checkpoint_folder(tmp_path / "ckpt", b"weights")
    assert not store.folder_published("checkpoints/x")
    store.put_dir(str(folder), "checkpoints/x")
    assert store.folder_published("checkpoints/x")
    assert not (tmp_path / "storage" / "checkpoints" / "x" / PUBLISHED).exists()  # the rename is the marker
    with pytest.raises(ImmutableArtefactError):
        store.put_dir(str(folder), "checkpoints/x")


def test_lineage_verify_reads_a_published_folder_against_its_listing(bucket_store, tmp_path):
    from svd_dag.lineage.verify import Findings, Stores, check_published

    rel = "checkpoints/stage3_hq_checkpoint/k2"
    uri = bucket_store.put_dir(str(_checkpoint_folder(tmp_path / "ckpt", b"w" * 2048)), rel)
    found = Findings()
    check_published(Stores(), found, uri)
    assert (found.checked["published"], found.problems) == (1, [])

    bucket_store.write_bytes(f"{rel}/unet/diffusion_pytorch_model.safetensors", b"w" * 1000)  # replaced, shorter
    bucket_store.fs.rm(bucket_store.uri(rel, "samples/a.mp4"))
    found = Findings()
    check_published(Stores(), found, uri)
    assert [(p["uri"], p["problem"], p["expected"], p["found"]) for p in found.problems] == [
        (f"{uri}/samples/a.mp4", "missing", 500, None),
        (f"{uri}/unet/diffusion_pytorch_model.safetensors", "size differs from the listing", 2048, 1000)]
