"""The raw-video inventory: which files a re-inventory reads comes from the bucket's listing alone
(sizes and stamps, no request per file), and what it keeps of earlier runs is folded in SQL."""

import os

import dagster as dg
import pytest

import synth
from conftest import assets_job, meta_of
from svd_dag.catalog import Catalog
from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings
from svd_dag.storage import Store, listing_fingerprint, modified_stamp


def _write_raw(store: Store, tmp_path) -> None:
    for name, make in (("a.mp4", synth.static_video), ("sub/b.mp4", synth.moving_video)):
        local = tmp_path / os.path.basename(name)
        make(str(local), seconds=1.0)
        store.write_bytes(name, local.read_bytes())
    store.write_bytes("notes.mp4", b"meeting notes, not a video")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_listing_gives_the_size_and_stamp_a_read_of_the_file_sees(where, tmp_path, request):
    if where == "s3":
        request.getfixturevalue("s3_endpoint")
        store = Store("s3://listing-stamps/raw")
        store.fs.mkdir("listing-stamps")
    else:
        store = Store(str(tmp_path / "raw"))
        os.makedirs(store.root)
    _write_raw(store, tmp_path)
    if where == "local":  # a link is listed with its target's size and stamp, as fs.info reports them
        os.symlink(store.uri("a.mp4"), store.uri("sub/link.mp4"))
    listing = store.list_files_detailed()
    found = store.fs.find(store.root)  # fsspec's own recursive listing, the reference
    assert listing.column("uri").to_pylist() == sorted(store.full_uri(p) for p in found) == store.list_files()
    assert listing.num_rows == (4 if where == "local" else 3)
    # streamed in batches of any size, the same files
    assert sorted(u for b in store.iter_listing(batch_rows=2) for u in b.column("uri").to_pylist()) == \
        listing.column("uri").to_pylist()
    for uri, size, stamp in zip(*(listing.column(c).to_pylist() for c in ("uri", "size_bytes", "modified"))):
        info = store.fs.info(uri)  # what inventory_one records for the bytes it hashes
        assert (size, stamp) == (int(info["size"]), modified_stamp(info)) and stamp, uri
    before = listing_fingerprint(listing)
    store.fs.rm(store.uri("notes.mp4"))
    store.write_bytes("notes.mp4", b"other notes, still not a video")
    assert listing_fingerprint(store.list_files_detailed()) != before


def test_a_reinventory_reads_only_new_and_changed_files_and_keeps_the_quarantine_dates(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(4):
        synth.moving_video(str(raw / f"v{i}.mp4"), seconds=1.0, speed=1.0 + i)
    (raw / "notes.mp4").write_bytes(b"meeting notes, not a video")
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_RAW_URI": str(raw)})
    defs, instance = build_defs(settings), dg.DagsterInstance.ephemeral()
    cat = Catalog.from_settings(settings)

    def inventory() -> tuple[dict, str]:
        result = assets_job(defs, "raw_videos").execute_in_process(instance=instance)
        assert result.success
        [mat] = result.get_asset_materialization_events()
        return meta_of(result, "raw_videos"), mat.event_specific_data.materialization.tags["dagster/data_version"]

    def quarantined() -> dict:
        return {os.path.basename(r["uri"]): r["quarantined_at"] for r in cat.quarantined("raw_videos")}

    first, version = inventory()
    assert (first["hashed_this_run"], first["dagster/row_count"], first["videos_ok"], first["quarantined"]) == (5, 5, 4, 1)
    assert "notes.mp4" in first["quarantined_files"] and "not a readable video container" in first["quarantined_files"]
    since = quarantined()
    assert list(since) == ["notes.mp4"]

    again, same_version = inventory()
    assert (again["hashed_this_run"], again["dagster/row_count"], same_version) == (0, 5, version)
    assert quarantined() == since  # still bad in the same way: quarantined since the first run

    synth.static_video(str(raw / "v9.mp4"), seconds=1.0)  # new
    (raw / "v0.mp4").unlink()  # gone
    synth.zoom_video(str(raw / "v1.mp4"))  # replaced in place
    os.utime(raw / "v1.mp4", ns=(1, 1))  # a stamp no earlier listing saw, whatever the clock's resolution
    synth.static_video(str(raw / "notes.mp4"), seconds=1.0)  # fixed
    third, new_version = inventory()
    assert third["hashed_this_run"] == 3 and new_version != version
    assert (third["dagster/row_count"], third["videos_ok"], third["quarantined"]) == (5, 5, 0)
    assert third["changes_since_last_inventory"] == {"new": 1, "replaced": 2, "deleted": 1}  # notes.mp4 too has new bytes
    assert quarantined() == {}  # the fixed file left the quarantine
    rows = {os.path.basename(r["uri"]): r for r in cat.rows("SELECT * FROM raw_videos")}
    assert sorted(rows) == ["notes.mp4", "v1.mp4", "v2.mp4", "v3.mp4", "v9.mp4"]
    assert rows["v1.mp4"]["modified"] == modified_stamp(Store(str(raw)).fs.info(str(raw / "v1.mp4")))
    assert rows["notes.mp4"]["status"] == "ok" and rows["notes.mp4"]["frame_count"] > 0
    assert cat.scalar("SELECT count(*) FROM raw_video_probes") == 0
