"""The raw-video inventory: every file under the raw root, with size, sha256 and probe.

Hashing reads every byte, so a file whose (size, modification stamp) is unchanged since
the previous inventory keeps its previous hash and probe: re-curation of a large bucket
only reads what is new or changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from svd_dag.curation.media import VideoError, probe_uri
from svd_dag.storage import Store, sha256_of

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


def inventory_version(rows: list[dict[str, Any]]) -> str:
    """Content hash of the inventory: changes when any file is added, removed or changed."""
    key = sorted((r["uri"], r["size_bytes"], r["sha256"] or "") for r in rows)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=INVENTORY_SCHEMA)
