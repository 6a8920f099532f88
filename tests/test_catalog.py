"""The DuckDB catalog: upserts never duplicate, quarantine is keyed by file and stage."""

import pyarrow as pa

from svd_dag.catalog import Catalog


def test_upsert_replaces_rows_with_the_same_key(tmp_path):
    cat = Catalog.embedded(str(tmp_path))
    cat.upsert("t", pa.Table.from_pylist([{"k": "a", "v": 1}, {"k": "b", "v": 2}]), key=["k"])
    cat.upsert("t", pa.Table.from_pylist([{"k": "b", "v": 3}, {"k": "c", "v": 4}]), key=["k"])
    assert cat.rows("SELECT * FROM t ORDER BY k") == [{"k": "a", "v": 1}, {"k": "b", "v": 3}, {"k": "c", "v": 4}]


def test_quarantine_is_idempotent_and_releasable(tmp_path):
    cat = Catalog.embedded(str(tmp_path))
    rec = {"uri": "s3://b/x.mp4", "sha256": None, "stage": "clips", "reason": "x.mp4: truncated"}
    cat.quarantine([rec])
    cat.quarantine([{**rec, "reason": "x.mp4: still truncated"}])
    cat.quarantine([{**rec, "stage": "raw_videos"}])
    rows = cat.quarantined()
    assert len(rows) == 2 and {r["stage"] for r in rows} == {"clips", "raw_videos"}
    assert cat.quarantined("clips")[0]["reason"] == "x.mp4: still truncated"
    cat.release_from_quarantine("clips", ["s3://b/x.mp4"])
    assert [r["stage"] for r in cat.quarantined()] == ["raw_videos"]


def test_a_column_that_starts_all_null_accepts_values_later(tmp_path):
    cat = Catalog.embedded(str(tmp_path))
    cat.upsert("t", pa.Table.from_pylist([{"k": "a", "parent": None}]), key=["k"])
    cat.upsert("t", pa.Table.from_pylist([{"k": "b", "parent": "a"}]), key=["k"])
    assert cat.rows("SELECT parent FROM t ORDER BY k") == [{"parent": None}, {"parent": "a"}]
