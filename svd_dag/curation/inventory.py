"""The raw-video inventory: every file under the raw root, with size, sha256 and probe.

Hashing reads every byte, so a file whose (size, modification stamp) is unchanged since
the previous inventory keeps its previous hash and probe: re-curation of a large bucket
only reads what is new or changed. Which files those are is one join in the catalog of the
bucket's listing (sizes and stamps come with the LIST, no request per file) against the
previous inventory, and the new inventory is folded in SQL as well, so 10^6 files cost a
listing and a join, not 10^6 Python rows. A first inventory of a large bucket reads for
days, so what it hashes is committed a batch at a time to `raw_video_probes`
(`inventory_batches`): a crash loses at most the batch in flight, and the next run starts
from what was committed.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import duckdb
import pyarrow as pa

from svd_dag.catalog import Catalog, follow_quarantine_on, replace_table_on, table_names
from svd_dag.curation.datasets import now, relation_digest
from svd_dag.curation.media import VideoError, probe_uri
from svd_dag.lineage.history import record_inventory_on
from svd_dag.storage import Store, modified_stamp, sha256_of

PROBES_TABLE = "raw_video_probes"  # rows hashed by an inventory that has not finished yet

INVENTORY_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("modified", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # ok | quarantined
        ("reason", pa.string()),
        ("container", pa.string()),
        ("codec", pa.string()),
        ("fps", pa.float64()),
        ("frame_count", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("duration_s", pa.float64()),
    ]
)


def inventory_one(store: Store, uri: str) -> dict[str, Any]:
    """One file's inventory row, read now; a bad file gets status 'quarantined' and a reason,
    never an exception."""
    info = store.fs.info(uri)  # not the listing's: the stamp must be the one of the bytes hashed next
    size, stamp = int(info.get("size") or 0), modified_stamp(info)
    row: dict[str, Any] = {name: None for name in INVENTORY_SCHEMA.names}
    row.update(uri=uri, size_bytes=size, modified=stamp, status="ok")
    if size > 0:
        row["sha256"] = sha256_of(store, uri)
    try:
        row.update(probe_uri(store, uri).as_dict())
    except VideoError as e:
        row.update(status="quarantined", reason=str(e))
    return row


def inventory_row(store: Store, uri: str) -> dict[str, Any]:
    """`inventory_one`, with a file that vanished or cannot be read as one quarantined row."""
    try:
        return inventory_one(store, uri)
    except Exception as e:  # noqa: BLE001 - one unreadable file never loses the rest of the inventory
        return {"uri": uri, "size_bytes": 0, "modified": "", "sha256": None, "status": "quarantined",
                "reason": f"{uri}: could not be read ({type(e).__name__}: {e})"}


LISTING = "listing_now"  # the bucket's listing, registered on the connection that compares it
INVENTORY_NOW = "raw_videos_now"  # the folded inventory, a temp table of the commit's connection


def _known_sql(con: duckdb.DuckDBPyConnection) -> str | None:
    """What earlier runs learned of each file: a committed probe of an unfinished run wins over
    the previous inventory (it is newer). None when there is nothing yet."""
    tables, columns = table_names(con), ", ".join(INVENTORY_SCHEMA.names)
    parts = []
    if PROBES_TABLE in tables:
        parts.append(f"SELECT {columns} FROM {PROBES_TABLE}")
    if "raw_videos" in tables:
        newer = f" ANTI JOIN {PROBES_TABLE} USING (uri)" if PROBES_TABLE in tables else ""
        parts.append(f"SELECT {columns} FROM raw_videos{newer}")
    return " UNION ALL ".join(parts) or None


def files_to_read(con: duckdb.DuckDBPyConnection, listing: pa.Table) -> pa.ChunkedArray:
    """The listed files whose (size, stamp) no earlier run hashed: new, changed, or never read.
    An Arrow column, not Python strings: a first inventory of 10^6 files would otherwise hold
    ~130 MB of them (here it is the listing's own column, no copy)."""
    known = _known_sql(con)
    if known is None:
        return listing.column("uri")
    con.register(LISTING, listing)
    try:
        return con.execute(f"""
            WITH known AS ({known})
            SELECT l.uri FROM {LISTING} l LEFT JOIN known k ON k.uri = l.uri
            WHERE k.uri IS NULL OR k.sha256 IS NULL OR k.size_bytes IS DISTINCT FROM l.size_bytes
               OR k.modified IS DISTINCT FROM l.modified
            ORDER BY l.uri""").fetch_arrow_table().column("uri")
    finally:
        con.unregister(LISTING)


def inventory_batches(store: Store, uris: Sequence[str] | pa.ChunkedArray, commit: Callable[[list], None],
                      batch_files: int = 256, threads: int = 8,
                      progress: Callable[[int, int], None] = lambda done, total: None) -> int:
    """Hash and probe `uris` (strings, or an Arrow column of them), `batch_files` at a time
    (`threads` files at once); each batch's rows go to `commit` before the next batch starts.
    Returns how many files were read."""
    step, done = max(1, batch_files), 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for lo in range(0, len(uris), step):
            batch = uris[lo:lo + step]
            batch = batch.to_pylist() if isinstance(batch, (pa.Array, pa.ChunkedArray)) else batch
            part = list(pool.map(lambda u: inventory_row(store, u), batch))
            commit(part)
            done += len(part)
            progress(done, len(uris))
    return done


def fold_inventory_on(con: duckdb.DuckDBPyConnection, listing: pa.Table) -> None:
    """The temp table INVENTORY_NOW := one row per listed file, from this run's probes or, for a
    file nobody read again, the previous inventory (`files_to_read` left out only those)."""
    columns = ", ".join(INVENTORY_SCHEMA.names)
    known = _known_sql(con)
    con.register(LISTING, listing)
    try:
        if known is None:  # nothing listed was read: an empty root
            con.register("no_rows", to_table([]))
            known = f"SELECT {columns} FROM no_rows"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {INVENTORY_NOW} AS "
                    f"SELECT {columns} FROM ({known}) SEMI JOIN {LISTING} USING (uri) ORDER BY uri")
        missing = con.execute(f"SELECT count(*) FROM {LISTING} ANTI JOIN {INVENTORY_NOW} USING (uri)").fetchone()[0]
        if missing:
            raise RuntimeError(f"{missing} listed file(s) were neither read this run nor in the previous inventory")
    finally:
        con.unregister(LISTING)


def inventory_summary(con: duckdb.DuckDBPyConnection, relation: str, show: int = 100) -> dict[str, Any]:
    """Counts and totals of an inventory, and the first `show` quarantined files (uri, reason)."""
    rows, ok, bad, size, seconds = con.execute(f"""
        SELECT count(*), count(*) FILTER (status = 'ok'), count(*) FILTER (status != 'ok'),
               coalesce(sum(size_bytes), 0), coalesce(sum(duration_s) FILTER (status = 'ok'), 0)
        FROM {relation}""").fetchone()
    shown = con.execute(f"SELECT uri, reason FROM {relation} WHERE status != 'ok' ORDER BY uri LIMIT {int(show)}")
    return {"rows": int(rows), "ok": int(ok), "quarantined": int(bad), "total_bytes": int(size),
            "total_s": float(seconds), "quarantined_files": [dict(uri=u, reason=r) for u, r in shown.fetchall()]}


def inventory_version(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    """Content hash of the inventory: changes when any file is added, removed or changed."""
    return relation_digest(con, f"SELECT uri, size_bytes, sha256 FROM {relation}")[0][:16]


def take_inventory(store: Store, cat: Catalog, batch_files: int = 256, threads: int = 8,
                   log: Any = logging.getLogger(__name__), log_every_s: float = 30) -> dict[str, Any]:
    """Inventory the root of `store` into `raw_videos` of `cat`: list it, read what is new or
    changed (committed a batch at a time), then fold, record the history and follow the
    quarantine in one transaction. `log` has `.info` and `.warning` (a Logger, Dagster's log).
    Returns {"hashed", "changes", "summary", "version"}."""
    listing = store.list_files_detailed()
    with cat.connect() as con:
        todo = files_to_read(con, listing)
    log.info(f"inventory: {listing.num_rows:,} files listed, {len(todo):,} new or changed to hash and probe")
    last_log = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if done == total or time.monotonic() - last_log[0] >= log_every_s:
            last_log[0] = time.monotonic()
            log.info(f"inventory: {done:,} / {total:,} new or changed files hashed and probed")

    def commit_probes(fresh: list) -> None:
        cat.upsert(PROBES_TABLE, to_table(fresh), ["uri"])
        for r in fresh:
            if r["status"] != "ok":
                log.warning(f"quarantined: {r['reason']}")

    hashed = inventory_batches(store, todo, commit_probes, batch_files, threads, progress)

    def commit(con):
        fold_inventory_on(con, listing)
        replace_table_on(con, "raw_videos", f"SELECT * FROM {INVENTORY_NOW}")
        if PROBES_TABLE in table_names(con):
            con.execute(f"DELETE FROM {PROBES_TABLE}")  # folded into raw_videos
        changes = record_inventory_on(con, INVENTORY_NOW, now())
        follow_quarantine_on(con, "raw_videos", INVENTORY_NOW)
        summary, version = inventory_summary(con, INVENTORY_NOW), inventory_version(con, INVENTORY_NOW)
        con.execute(f"DROP TABLE {INVENTORY_NOW}")
        return {"hashed": hashed, "changes": changes, "summary": summary, "version": version}

    return cat.write(commit)


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=INVENTORY_SCHEMA)
