"""`svd-dag lineage verify`: re-hash what the record names and report every mismatch.

Checked, for one checkpoint's chain (or, with no checkpoint, everything the catalog names):
- weights: each checkpoint folder's safetensors against its data version, and its
  `clips_used.parquet` against the recorded sha256;
- checkpoint folders on S3: the `.published` listing is there (else the folder is an upload
  that never finished) and every file it lists is there with its listed size (a listing
  read, no bytes);
- manifests: each dataset version's manifest file against the sha256 recorded at publish;
- shards: the shard index a checkpoint read and every member it lists (a ranged read each)
  against their sha256;
- raw videos: every raw video the used clips came from (everything the inventory holds
  without a checkpoint) re-hashed in full; a file gone or holding other bytes is reported
  (the inventory's size-and-mtime shortcut is not trusted here).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from svd_dag.lineage.records import USED
from svd_dag.storage import PUBLISHED, Store, sha256_of, tree_digest

WEIGHTS_DIGEST_CHARS = 16  # checkpoints are versioned by the first 16 hex digits of the weights' sha256


class Stores:
    """One Store per filesystem (local, s3://bucket), so any recorded URI can be read."""

    def __init__(self, options: Optional[dict] = None):
        self.options = options or {}
        self._by_root: dict[str, Store] = {}

    def __call__(self, uri: str) -> Store:
        root = "/".join(uri.split("/", 3)[:3]) if "://" in uri else "/"
        if root not in self._by_root:
            self._by_root[root] = Store(root, self.options if "://" in uri else None)
        return self._by_root[root]


class Findings:
    def __init__(self):
        self.checked: Counter[str] = Counter()
        self.problems: list[dict[str, Any]] = []
        self.unverifiable: list[dict[str, Any]] = []  # named, but recorded before hashes were (no verdict)

    def compare(self, kind: str, uri: str, expected: Optional[str], read: Callable[[], str], n: int = 64) -> None:
        if not expected:
            self.unverifiable.append({"kind": kind, "uri": uri, "why": "no hash recorded"})
            return
        self.checked[kind] += 1
        try:
            found = read()
        except FileNotFoundError:
            self.problems.append({"kind": kind, "uri": uri, "problem": "missing", "expected": expected, "found": None})
            return
        except OSError as e:
            self.problems.append({"kind": kind, "uri": uri, "problem": f"unreadable: {e}", "expected": expected,
                                  "found": None})
            return
        if found[:n] != expected[:n]:
            self.problems.append({"kind": kind, "uri": uri, "problem": "hash mismatch", "expected": expected,
                                  "found": found})

    def report(self) -> dict[str, Any]:
        return {"ok": not self.problems, "checked": dict(self.checked), "problems": self.problems,
                "unverifiable": self.unverifiable}


def _exists_or_raise(store: Store, uri: str) -> None:
    if not store.exists(uri):
        raise FileNotFoundError(uri)


def _file_hash(stores: Stores, uri: str) -> str:
    """sha256 of a file, or the tree digest of a folder (a dataset stored as a folder: orbit renders)."""
    store = stores(uri)
    _exists_or_raise(store, uri)
    return tree_digest(store, uri, "") if store.fs.isdir(store.uri(uri)) else sha256_of(store, uri)


def _weights_hash(stores: Stores, uri: str) -> str:
    store = stores(uri)
    _exists_or_raise(store, f"{uri.rstrip('/')}/svd_dag_training.json")
    return tree_digest(store, uri, ".safetensors")


def check_published(stores: Stores, found: Findings, uri: str) -> None:
    """An S3 checkpoint folder against its `.published` listing: present, and every listed file
    present with its listed size (local folders appear whole by a rename: nothing to check)."""
    store = stores(uri)
    if store.is_local:
        return
    folder = uri.rstrip("/")
    found.checked["published"] += 1
    try:
        listing = json.loads(store.read_bytes(f"{folder}/{PUBLISHED}"))["files"]
    except FileNotFoundError:
        found.problems.append({"kind": "published", "uri": folder, "problem": f"no {PUBLISHED} listing: an upload that "
                               "did not finish, or a folder written before listings", "expected": PUBLISHED,
                               "found": None})
        return
    store.fs.invalidate_cache(store.uri(folder))
    sizes = {posixpath.relpath(p, store.uri(folder).removeprefix("s3://")): info["size"]
             for p, info in store.fs.find(store.uri(folder), detail=True).items()}
    for name, entry in sorted(listing.items()):
        if sizes.get(name) != entry["size"]:
            found.problems.append({"kind": "published", "uri": f"{folder}/{name}",
                                   "problem": "missing" if name not in sizes else "size differs from the listing",
                                   "expected": entry["size"], "found": sizes.get(name)})


def _member_hash(stores: Stores, shard_uri: str, offset: int, size: int) -> str:
    from svd_dag.curation.shards import read_member

    store = stores(shard_uri)
    _exists_or_raise(store, shard_uri)
    data = read_member(store, shard_uri, offset, size)
    return hashlib.sha256(data).hexdigest()


def _checkpoint_rows(cat, ref: Optional[str]) -> list[dict[str, Any]]:
    from svd_dag.lineage.up import chain_of, find_checkpoint

    if ref is None:
        return cat.records("SELECT * FROM checkpoints ORDER BY asset, variant, data_version") \
            if "checkpoints" in cat.tables() else []
    return chain_of(cat, find_checkpoint(cat, ref))[0]


def _raw_videos(cat, rows: list[dict[str, Any]], everything: bool, tables: set[str]) -> list[tuple[str, str]]:
    """(uri, sha256) pairs to re-hash: the bytes the chain's used clips came from; with
    `everything`, those of every checkpoint plus the current inventory."""
    parts, params = [], []
    if everything and "raw_video_history" in tables:
        parts.append("SELECT uri, sha256 FROM raw_video_history WHERE replaced_at IS NULL AND deleted_at IS NULL "
                     "AND sha256 IS NOT NULL")
    if "checkpoint_clips" in tables and rows:
        keys = [[r["asset"], r["variant"] or "", r["data_version"]] for r in rows]
        where = " OR ".join("(asset = ? AND variant = ? AND data_version = ?)" for _ in keys)
        parts.append(f"SELECT video_uri, video_sha256 FROM checkpoint_clips WHERE status = '{USED}' "
                     f"AND video_sha256 IS NOT NULL AND ({where})")
        params += [v for k in keys for v in k]
    if not parts:
        return []
    return [(r["uri"], r["sha256"]) for r in cat.records(f"SELECT DISTINCT * FROM ({' UNION ALL '.join(parts)}) t(uri, sha256) "
                                                      "ORDER BY 1, 2", params)]


MEMBER_BATCH = 10_000  # shard members hashed per round: 10^6 of them never sit in Python at once
MEMBER_COLUMNS = "DISTINCT s.shard_uri, s.shard_member, s.shard_offset, s.shard_size, s.shard_sha256"


def _shard_member_sql(rows: list[dict[str, Any]], everything: bool, tables: set[str]) -> Optional[tuple[str, list]]:
    """The query naming the shard members to re-hash (every one, or those of the shard indexes
    the chain read), or None."""
    if "clip_shards" not in tables:
        return None
    if everything:
        return f"SELECT {MEMBER_COLUMNS} FROM clip_shards s", []
    indexes = sorted({r["shard_index_uri"] for r in rows if r.get("data_source") == "shards" and r.get("shard_index_uri")})
    if not indexes:
        return None
    return (f"SELECT {MEMBER_COLUMNS} FROM clip_shards s JOIN shard_indexes i ON s.encode_key = i.encode_key "
            "WHERE i.index_uri IN (SELECT unnest(?))", [indexes])


def _check_members(cat, stores: Stores, found: "Findings", query: Optional[tuple[str, list]], pool) -> None:
    if query is None:
        return
    with cat.worklist(*query) as work:
        for batch in work.iter_batches(batch_size=MEMBER_BATCH):
            members = batch.to_pylist()
            hashes = pool.map(lambda m: _safe(lambda: _member_hash(stores, m["shard_uri"], m["shard_offset"],
                                                                   m["shard_size"])), members)
            for m, got in zip(members, hashes):
                found.compare("shard_member", f"{m['shard_uri']}#{m['shard_member']}", m["shard_sha256"],
                              _reraise(got))


def lineage_verify(cat, ref: Optional[str] = None, options: Optional[dict] = None, threads: int = 8) -> dict[str, Any]:
    """Every mismatch or missing file among what the record names (see the module docstring)."""
    tables, stores, found = cat.tables(), Stores(options), Findings()
    rows = _checkpoint_rows(cat, ref)
    everything = ref is None
    for r in rows:
        found.compare("weights", r["checkpoint_uri"], r["data_version"],
                      lambda r=r: _weights_hash(stores, r["checkpoint_uri"]), n=WEIGHTS_DIGEST_CHARS)
        check_published(stores, found, r["checkpoint_uri"])
        if r.get("clips_used_uri"):
            found.compare("clips_used", r["clips_used_uri"], r.get("clips_used_sha256"),
                          lambda r=r: _file_hash(stores, r["clips_used_uri"]))
    versions = {r["dataset_version"] for r in rows}
    if "dataset_versions" in tables:
        sql = "SELECT dataset_version, manifest_uri, manifest_sha256, report FROM dataset_versions"
        datasets = cat.records(sql) if everything else cat.records(
            f"{sql} WHERE dataset_version IN (SELECT unnest(?))", [sorted(versions)])
        for d in datasets:
            if "manifest_sha256" in d:
                found.compare("manifest", d["manifest_uri"], d["manifest_sha256"],
                              lambda d=d: _file_hash(stores, d["manifest_uri"]))
    if "shard_indexes" in tables:
        index_uris = sorted({r["shard_index_uri"] for r in rows if r.get("shard_index_uri")})
        for ix in cat.records("SELECT index_uri, index_sha256 FROM shard_indexes" +
                           ("" if everything else " WHERE index_uri IN (SELECT unnest(?))"),
                           None if everything else [index_uris]):
            found.compare("shard_index", ix["index_uri"], ix["index_sha256"],
                          lambda ix=ix: _file_hash(stores, ix["index_uri"]))
    raw = _raw_videos(cat, rows, everything, tables)  # one per video: 10^5 at 10^6 clips
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # I/O bound: reads overlap
        _check_members(cat, stores, found, _shard_member_sql(rows, everything, tables), pool)
        raw_hashes = list(pool.map(lambda v: _safe(lambda: _file_hash(stores, v[0])), raw))
    for (uri, sha), got in zip(raw, raw_hashes):
        found.compare("raw_video", uri, sha, _reraise(got))
    return {"query": ref or "everything", **found.report()}


def _safe(fn: Callable[[], str]) -> Any:
    try:
        return fn()
    except OSError as e:
        return e


def _reraise(value: Any) -> Callable[[], str]:
    def read() -> str:
        if isinstance(value, BaseException):
            raise value
        return value
    return read
