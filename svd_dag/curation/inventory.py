"""The raw-video inventory: every file under the raw root, with size, sha256 and probe.

Hashing reads every byte, so a file whose (size, modification stamp) is unchanged since
the previous inventory keeps its previous hash and probe: re-curation of a large bucket
only reads what is new or changed. A first inventory of a large bucket reads for days, so
what it hashes is committed a batch at a time to `raw_video_probes` (`inventory_batches`):
a crash loses at most the batch in flight, and the next run starts from what was committed.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import pyarrow as pa

from svd_dag.curation.media import VideoError, probe_uri
from svd_dag.storage import Store, sha256_of

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


def _modified_stamp(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def inventory_one(store: Store, uri: str, previous: dict[str, dict] | None = None) -> dict[str, Any]:
    """One inventory row; a bad file gets status 'quarantined' and a reason, never an exception."""
    info = store.fs.info(uri)
    size, stamp = int(info.get("size") or 0), _modified_stamp(info)
    prev = (previous or {}).get(uri)
    if prev and prev["size_bytes"] == size and prev["modified"] == stamp and prev["sha256"]:
        return dict(prev)
    row: dict[str, Any] = {name: None for name in INVENTORY_SCHEMA.names}
    row.update(uri=uri, size_bytes=size, modified=stamp, status="ok")
    if size > 0:
        row["sha256"] = sha256_of(store, uri)
    try:
        row.update(probe_uri(store, uri).as_dict())
    except VideoError as e:
        row.update(status="quarantined", reason=str(e))
    return row


def inventory_row(store: Store, uri: str, previous: dict[str, dict] | None = None) -> dict[str, Any]:
    """`inventory_one`, with a file that vanished or cannot be read as one quarantined row."""
    try:
        return inventory_one(store, uri, previous)
    except Exception as e:  # noqa: BLE001 - one unreadable file never loses the rest of the inventory
        return {"uri": uri, "size_bytes": 0, "modified": "", "sha256": None, "status": "quarantined",
                "reason": f"{uri}: could not be read ({type(e).__name__}: {e})"}


def inventory_batches(store: Store, uris: Sequence[str], previous: dict[str, dict], commit: Callable[[list], None],
                      batch_files: int = 256, threads: int = 8,
                      progress: Callable[[int, int, int], None] = lambda done, total, hashed: None
                      ) -> tuple[list[dict[str, Any]], int]:
    """Inventory rows of `uris`, `batch_files` at a time (`threads` files at once); the rows of a
    batch that were hashed or probed, not reused from `previous`, go to `commit` before the next
    batch starts. Returns (every row, in `uris` order; how many were hashed or probed)."""
    rows: list[dict[str, Any]] = []
    hashed, step = 0, max(1, batch_files)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for lo in range(0, len(uris), step):
            part = list(pool.map(lambda u: inventory_row(store, u, previous), uris[lo:lo + step]))
            fresh = [r for r in part if previous.get(r["uri"]) != r]
            if fresh:
                commit(fresh)
            rows += part
            hashed += len(fresh)
            progress(len(rows), len(uris), hashed)
    return rows, hashed


def inventory_version(rows: list[dict[str, Any]]) -> str:
    """Content hash of the inventory: changes when any file is added, removed or changed."""
    key = sorted((r["uri"], r["size_bytes"], r["sha256"] or "") for r in rows)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=INVENTORY_SCHEMA)
