"""What the current-state tables forget: raw videos that were deleted or replaced in place, and
clips of videos that left the inventory.

`raw_video_history` has one row per (uri, bytes) ever seen: first and last seen, and, once
the file is gone or holds other bytes, a tombstone (`deleted_at`) or `replaced_at` with the
new sha256; a row is closed, never removed, so the clips cut from the old bytes stay
attributed to them. `clip_history` keeps every clip ever cut (the `clips` table holds the
current set only). Both are written inside the asset's own transaction.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

RAW_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS raw_video_history (
    uri VARCHAR, sha256 VARCHAR, size_bytes BIGINT, first_seen TIMESTAMP, last_seen TIMESTAMP,
    deleted_at TIMESTAMP, replaced_at TIMESTAMP, replaced_by VARCHAR)
"""
CLIP_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS clip_history (
    clip_id VARCHAR, video_sha256 VARCHAR, video_uri VARCHAR, start_frame BIGINT, end_frame BIGINT,
    start_s DOUBLE, end_s DOUBLE, scan_key VARCHAR, first_seen TIMESTAMP)
"""
OPEN = "deleted_at IS NULL AND replaced_at IS NULL"


def record_inventory_on(con: duckdb.DuckDBPyConnection, inventory: str, now: dt.datetime) -> dict[str, int]:
    """Fold one inventory (a relation with uri, sha256, size_bytes) into the history; returns
    counts of what changed."""
    con.execute(RAW_HISTORY_DDL)
    con.execute(f"CREATE OR REPLACE TEMP VIEW inventory_now AS SELECT uri, sha256, size_bytes FROM {inventory}")
    try:
        replaced_where = (f"FROM raw_video_history h, inventory_now i WHERE h.uri = i.uri AND h.{OPEN} "
                          "AND h.sha256 IS DISTINCT FROM i.sha256")
        deleted_where = f"FROM raw_video_history h WHERE h.{OPEN} AND h.uri NOT IN (SELECT uri FROM inventory_now)"
        added_where = (f"FROM inventory_now i WHERE NOT EXISTS (SELECT 1 FROM raw_video_history h "
                       f"WHERE h.uri = i.uri AND h.{OPEN} AND h.sha256 IS NOT DISTINCT FROM i.sha256)")
        # DuckLake's UPDATE has no RETURNING: count first, in the same transaction.
        replaced, deleted, added = (con.execute(f"SELECT count(*) {w}").fetchone()[0]
                                    for w in (replaced_where, deleted_where, added_where))
        con.execute(f"""UPDATE raw_video_history h SET replaced_at = $now, replaced_by = i.sha256
                        FROM inventory_now i WHERE h.uri = i.uri AND h.{OPEN}
                        AND h.sha256 IS DISTINCT FROM i.sha256""", {"now": now})
        con.execute(f"UPDATE raw_video_history SET deleted_at = $now WHERE {OPEN} "
                    "AND uri NOT IN (SELECT uri FROM inventory_now)", {"now": now})
        con.execute(f"UPDATE raw_video_history h SET last_seen = $now FROM inventory_now i "
                    f"WHERE h.uri = i.uri AND h.{OPEN} AND h.sha256 IS NOT DISTINCT FROM i.sha256", {"now": now})
        con.execute(f"INSERT INTO raw_video_history SELECT i.uri, i.sha256, i.size_bytes, $now, $now, NULL, NULL, "
                    f"NULL {added_where}", {"now": now})
    finally:
        con.execute("DROP VIEW IF EXISTS inventory_now")
    return {"new": added - replaced, "replaced": replaced, "deleted": deleted}


def remember_clips_on(con: duckdb.DuckDBPyConnection, clips: pa.Table, now: dt.datetime) -> None:
    """Add the clips not yet in `clip_history` (a clip id names one frame range of one video's bytes)."""
    con.execute(CLIP_HISTORY_DDL)
    con.register("clips_now", clips)
    try:
        con.execute("""INSERT INTO clip_history
                       SELECT c.clip_id, c.video_sha256, c.video_uri, c.start_frame, c.end_frame, c.start_s, c.end_s,
                              c.scan_key, $now FROM clips_now c
                       WHERE c.clip_id NOT IN (SELECT clip_id FROM clip_history)""", {"now": now})
    finally:
        con.unregister("clips_now")
