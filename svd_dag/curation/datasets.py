"""Dataset versions: immutable, content-addressed manifests of clips that training reads.

A dataset version is the hash of everything training reads from it: every column of the
train manifest and of its evaluation split, the thresholds, and the annotator versions
that produced the scores. Re-annotating with other weights that keep the same clips
therefore makes a new version. A version folder (manifest, eval manifest, report) is
written once; different bytes under an existing version are an error, never an overwrite.

All of it is SQL on an open catalog connection (the caller's transaction), so the clips
never pass through Python: manifests are written by DuckDB to a local file and copied to
storage, and digests are computed by DuckDB in hash buckets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import duckdb
import pyarrow as pa

from svd_dag.catalog import replace_table_on, table_names, upsert_on
from svd_dag.lake import LAKE
from svd_dag.storage import Store, file_sha256

MANIFEST_COLUMNS = ("clip_id, video_sha256, video_uri, start_frame, end_frame, start_s, end_s, duration_s, fps, "
                    "width, height, motion_score, text_area, aesthetic_score, caption_similarity, caption")
# Bump when what a version hashes changes meaning (a new column of the manifest, another digest).
VERSION_FORMAT = 3

DATASET_VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS dataset_versions (
    dataset_version VARCHAR, asset VARCHAR, manifest_uri VARCHAR, kept BIGINT, total BIGINT,
    report VARCHAR, created_at TIMESTAMP, manifest_sha256 VARCHAR)
"""
# Which clips each version holds (train and eval parts alike): what `svd-dag lineage down`
# answers from, with `filter_decisions` for the clips a version removed.
DATASET_MEMBERS_DDL = """
CREATE TABLE IF NOT EXISTS dataset_members (dataset_version VARCHAR, asset VARCHAR, clip_id VARCHAR, video_sha256 VARCHAR)
"""
# The annotators whose scores a version was filtered on, as they were then (the current
# versions live in `annotator_versions`, one row per annotator, and move on).
DATASET_ANNOTATORS_DDL = """
CREATE TABLE IF NOT EXISTS dataset_annotators (
    dataset_version VARCHAR, annotator VARCHAR, table_name VARCHAR, model_version VARCHAR, weights VARCHAR,
    code_version VARCHAR, placement VARCHAR, weights_sha256 VARCHAR)
"""
SNAPSHOT_COLUMNS = ("annotator", "table_name", "model_version", "weights", "weights_sha256", "code_version",
                    "placement")
FILTER_DECISIONS_DDL = """
CREATE TABLE IF NOT EXISTS filter_decisions (
    clip_id VARCHAR, criterion VARCHAR, value DOUBLE, cutoff DOUBLE, fraction DOUBLE, decision VARCHAR,
    dataset_version VARCHAR)
"""


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def json_digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def relation_digest(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> tuple[str, int]:
    """(digest, row count) of every row and column of `sql`, whatever their order.

    Each row is hashed as JSON (names, values, nulls: md5, 128 bits), and the row hashes are
    combined by sums and XORs of their two halves with the count: a multiset hash whose state
    is a handful of integers, so 10^8 rows take no more memory than 10. Rows of a manifest
    are distinct (one per clip), so a row added, removed or changed always changes it."""
    row = con.execute(f"""
        WITH r AS ({sql}), h AS (SELECT to_json(r)::VARCHAR AS j FROM r)
        SELECT count(*), coalesce(sum(md5_number_lower(j)), 0), coalesce(sum(md5_number_upper(j)), 0),
               coalesce(bit_xor(md5_number_lower(j)), 0), coalesce(bit_xor(md5_number_upper(j)), 0) FROM h""",
                      list(params or [])).fetchone()
    return hashlib.sha256(json.dumps([VERSION_FORMAT, *[str(v) for v in row]]).encode()).hexdigest(), int(row[0])


def annotator_snapshot(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The annotator versions the current annotations come from (one row per annotator)."""
    if "annotator_versions" not in table_names(con):
        return []
    cols = [r[0] for r in con.execute("DESCRIBE annotator_versions").fetchall()]
    wanted = [c for c in SNAPSHOT_COLUMNS if c in cols]
    rows = con.execute(f"SELECT {', '.join(wanted)} FROM annotator_versions ORDER BY annotator").fetchall()
    return [dict(zip(wanted, r)) for r in rows]


def weights_label(snapshot: list[dict[str, Any]]) -> str:
    """'pretrained', or 'random (<annotators>)' when any current score came from random weights."""
    random_parts = [r["annotator"] for r in snapshot if r.get("weights") == "random"]
    return f"random ({', '.join(random_parts)})" if random_parts else "pretrained"


@dataclass
class DatasetPart:
    """One manifest of a version: the catalog table it becomes and the SELECT that fills it."""

    asset: str
    sql: str
    params: Sequence[Any] = ()
    file: str = "manifest.parquet"
    suffix: str = ""  # appended to the version id in `dataset_versions` ("-eval")


@dataclass
class PublishedVersion:
    version: str
    manifest_uris: dict[str, str]
    rows: dict[str, int]
    report_uri: str
    reused: bool


def publish_dataset(con: duckdb.DuckDBPyConnection, store: Store, parts: list[DatasetPart],
                    version_inputs: dict[str, Any], report: dict[str, Any], folder: str,
                    total: int, make_current: bool = True) -> PublishedVersion:
    """Write a dataset version (one or more manifests sharing one version id) once, and make it
    the current content of each part's catalog table, on `con` (inside the caller's transaction,
    so train and eval change together). `folder` is the storage folder the version id is
    appended to; `version_inputs` are thresholds, annotator versions and the like."""
    digests = {}
    for part in parts:
        con.execute(f'CREATE OR REPLACE TEMP TABLE "publish:{part.asset}" AS {part.sql}', list(part.params))
        digests[part.asset] = relation_digest(con, f'SELECT * FROM "publish:{part.asset}"')
    version = json_digest({"format": VERSION_FORMAT, "parts": {a: d[0] for a, d in digests.items()},
                           "inputs": version_inputs})
    report = {**report, "dataset_version": version, "version_inputs": version_inputs,
              "manifest_digests": {a: d[0] for a, d in digests.items()}}
    con.execute(DATASET_VERSIONS_DDL)
    known = {r[0] for r in con.execute("SELECT dataset_version FROM dataset_versions WHERE dataset_version IN "
                                       "(SELECT unnest(?))", [[version + p.suffix for p in parts]]).fetchall()}
    uris, reused, file_hashes = {}, True, {}
    with tempfile.TemporaryDirectory(prefix="dataset-") as tmp:
        for part in parts:
            rel = f"{folder}/{version}/{part.file}"
            uris[part.asset] = store.uri(rel)
            if version + part.suffix in known and store.exists(rel):
                continue  # this exact content was published before: written once, reused
            reused = False
            local = os.path.join(tmp, part.file)
            meta = json.dumps(report, sort_keys=True, default=str).replace("'", "''")
            con.execute(f"""COPY (SELECT *, '{version + part.suffix}' AS dataset_version FROM "publish:{part.asset}")
                            TO '{local}' (FORMAT parquet, KV_METADATA {{'svd_dag.filter_report': '{meta}'}})""")
            file_hashes[part.asset] = file_sha256(local)  # what `svd-dag lineage verify` re-hashes
            store.put_file_once(local, rel)
    # The report holds no clock time (that is in the catalog row), so a rerun writes the same bytes.
    report_uri = store.write_once(f"{folder}/{version}/filter_report.json",
                                  json.dumps(report, indent=2, sort_keys=True, default=str).encode())
    created = now()
    for part in parts:
        if make_current:
            replace_table_on(con, part.asset, f"""SELECT *, '{version + part.suffix}' AS dataset_version
                                                   FROM "publish:{part.asset}" """)
        if version + part.suffix not in known:
            _record_members(con, part, version + part.suffix)
            _record_annotators(con, report.get("annotators") or [], version + part.suffix)
            part_report = report if not part.suffix else {"parent": version, "dataset_version": version + part.suffix}
            upsert_on(con, "dataset_versions", pa.Table.from_pylist([{
                "dataset_version": version + part.suffix, "asset": part.asset, "manifest_uri": uris[part.asset],
                "kept": digests[part.asset][1], "total": total if not part.suffix else digests[part.asset][1],
                "report": json.dumps(part_report, default=str), "created_at": created,
                "manifest_sha256": file_hashes.get(part.asset)}]), key=["dataset_version"])
        con.execute(f'DROP TABLE "publish:{part.asset}"')
    # Names the snapshot this transaction becomes, so the catalog can be read as of this version.
    con.execute(f"CALL {LAKE}.set_commit_message('svd-dag', '{commit_message(folder, version)}')")
    return PublishedVersion(version, uris, {a: d[1] for a, d in digests.items()}, report_uri, reused)


def _record_members(con: duckdb.DuckDBPyConnection, part: DatasetPart, version: str) -> None:
    cols = {r[0] for r in con.execute(f'DESCRIBE "publish:{part.asset}"').fetchall()}
    if {"clip_id", "video_sha256"} <= cols:  # clip datasets (orbit renders have objects, not clips)
        con.execute(DATASET_MEMBERS_DDL)
        con.execute("DELETE FROM dataset_members WHERE dataset_version = ?", [version])
        con.execute(f"""INSERT INTO dataset_members SELECT ?, ?, clip_id, video_sha256 FROM "publish:{part.asset}"
                        ORDER BY video_sha256, clip_id""", [version, part.asset])


def _record_annotators(con: duckdb.DuckDBPyConnection, annotators: list[dict[str, Any]], version: str) -> None:
    if not annotators:
        return
    con.execute(DATASET_ANNOTATORS_DDL)
    upsert_on(con, "dataset_annotators", pa.Table.from_pylist(
        [{"dataset_version": version, **{c: a.get(c) for c in SNAPSHOT_COLUMNS}} for a in annotators]),
        key=["dataset_version", "annotator"])


def commit_message(folder: str, version: str) -> str:
    return f"publish {folder} {version}"


def version_snapshot(cat, folder: str, version: str) -> Optional[int]:
    """The catalog snapshot in which `version` was first published (read the catalog as it was
    then with `SELECT ... FROM <table> AT (VERSION => <snapshot>)`)."""
    return cat.scalar(f"SELECT min(snapshot_id) FROM ducklake_snapshots('{LAKE}') WHERE commit_message = ?",
                      [commit_message(folder, version)])


def record_decisions(con: duckdb.DuckDBPyConnection, version: str) -> None:
    """Every clip's decision per criterion (`filter_decision_rows` from `percentile_filter`) under
    `version`; a version's rows are written once."""
    con.execute(FILTER_DECISIONS_DDL)
    if con.execute("SELECT count(*) FROM filter_decisions WHERE dataset_version = ?", [version]).fetchone()[0]:
        return
    con.execute("INSERT INTO filter_decisions SELECT *, ? FROM filter_decision_rows", [version])


def current_dataset(cat, asset: str) -> dict:
    """The `dataset_versions` row of the version `asset`'s catalog table holds now."""
    sql = (f'SELECT d.* FROM dataset_versions d JOIN (SELECT DISTINCT dataset_version FROM "{asset}") cur '
           "USING (dataset_version) WHERE d.asset = ?")
    tables = cat.tables()
    rows = cat.rows(sql, [asset]) if asset in tables and "dataset_versions" in tables else []
    if not rows:
        raise RuntimeError(_why_no_current_version(cat, asset, tables))
    return rows[0]


EMPTY_VERSION_HINTS = {
    "lvd_f_eval": "the held-out split is empty: lvd_f holds out about `eval_fraction` of its kept clips by a hash "
                  "(of each clip, or of whole videos with eval_split_by: video), and too few clips were kept for "
                  "any to fall in it; raise lvd_f's eval_fraction (or use eval_split_by: clip), or add videos",
    "lvd_f": "no clip survived lvd_f's filters: lower its *_remove fractions or add videos",
    "hq_finetune_set": "no clip of lvd_f survived the stricter filters: lower hq_finetune_set's *_remove fractions",
}


def _why_no_current_version(cat, asset: str, tables: set) -> str:
    """Why `asset` has no current version, naming the setting to change when it is an empty one."""
    if asset not in tables or "dataset_versions" not in tables:
        return f"{asset} has no current version: materialize it first"
    newest = cat.rows("SELECT dataset_version, kept FROM dataset_versions WHERE asset = ? "
                      "ORDER BY created_at DESC LIMIT 1", [asset])
    if newest and not newest[0]["kept"]:
        hint = EMPTY_VERSION_HINTS.get(asset, "it holds no clip")
        return f"{asset}'s current version {newest[0]['dataset_version']} holds no clip: {hint}"
    return f"{asset} has no current version: materialize it first"


def shard_index_uri(key: str, version: str, digest: str) -> str:
    """Named by content too: the index of a version grows as more of its clips get shards,
    and each state of it is its own immutable file."""
    return f"clip_shards/{key}/index/{version}-{digest[:16]}.parquet"


def write_shard_index(cat, store: Store, dataset: dict, key: str) -> dict:
    """A dataset version's manifest joined with the shards of encode `key` (clips without one
    keep null shard columns and are read by reference), written once and recorded in
    `shard_indexes`. The join runs in DuckDB over the manifest streamed from storage."""
    import pyarrow.dataset as pads

    from svd_dag.curation.shards import SHARD_SCHEMA

    manifest = pads.dataset(store.uri(dataset["manifest_uri"]).removeprefix("s3://"), format="parquet",
                            filesystem=store.fs)
    shard_cols = ", ".join(f's."{f.name}"' for f in SHARD_SCHEMA)
    manifest_cols = [n for n in manifest.schema.names if n not in SHARD_SCHEMA.names]
    with tempfile.TemporaryDirectory(prefix="shard-index-") as tmp:
        local = os.path.join(tmp, "index.parquet")
        with cat.connect() as con:
            con.register("manifest", manifest)
            has_shards = "clip_shards" in table_names(con)
            join = (f"LEFT JOIN (SELECT clip_id, {', '.join(f.name for f in SHARD_SCHEMA)} FROM clip_shards "
                    "WHERE encode_key = ?) s USING (clip_id)") if has_shards else ""
            cols = ", ".join(f'm."{c}"' for c in manifest_cols)
            select = (f"SELECT {cols}, {shard_cols} FROM manifest m {join} ORDER BY m.clip_id" if has_shards else
                      f"SELECT {cols}, " + ", ".join(f"NULL::{_duck_type(f.type)} AS {f.name}" for f in SHARD_SCHEMA)
                      + " FROM manifest m ORDER BY m.clip_id")
            con.execute(f"COPY ({select}) TO '{local}' (FORMAT parquet)", [key] if has_shards else None)
            clips, sharded = con.execute(f"SELECT count(*), count(shard_uri) FROM read_parquet('{local}')").fetchone()
        digest = file_sha256(local)
        uri = store.put_file_once(local, shard_index_uri(key, dataset["dataset_version"], digest))
    row = {"dataset_version": dataset["dataset_version"], "dataset_asset": dataset["asset"], "encode_key": key,
           "index_uri": uri, "index_sha256": digest, "clips": int(clips), "sharded": int(sharded), "created_at": now()}
    cat.upsert("shard_indexes", pa.Table.from_pylist([row]), key=["dataset_version", "encode_key"])
    return row


def _duck_type(t: pa.DataType) -> str:
    return {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE"}[t]


def shard_index_for(cat, store: Store, dataset: dict) -> Optional[dict]:
    """The `shard_indexes` row for a dataset version of lvd_f clips under the latest encode key
    `clip_shards` used; for a version it did not index (hq_finetune_set, a subset of lvd_f)
    the index is written now. None when `clip_shards` has never run."""
    if "shard_indexes" not in cat.tables():
        return None
    latest = cat.rows("SELECT encode_key FROM shard_indexes WHERE dataset_asset = 'lvd_f' "
                      "ORDER BY created_at DESC LIMIT 1")
    if not latest:
        return None
    key = latest[0]["encode_key"]
    rows = cat.rows("SELECT * FROM shard_indexes WHERE dataset_version = ? AND encode_key = ?",
                    [dataset["dataset_version"], key])
    return rows[0] if rows else write_shard_index(cat, store, dataset, key)
