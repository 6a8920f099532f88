"""One object store interface over local folders and s3:// prefixes (fsspec).

Domain code takes a `Store`; the Dagster resource in `resources/storage.py` only builds
one from configuration. Writes are atomic on local disk (temp file, then rename) so a
crash never leaves a half-written artefact under its final name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable, Iterable, Iterator

import fsspec
import pyarrow as pa

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


def s3_options_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """s3fs options from SVD_DAG_S3_ENDPOINT_URL (e.g. MinIO); keys come from the AWS chain."""
    env = os.environ if env is None else env
    endpoint = env.get("SVD_DAG_S3_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


LISTING_SCHEMA = pa.schema([("uri", pa.string()), ("size_bytes", pa.int64()), ("modified", pa.string())])
LISTING_BATCH_ROWS = 65536  # rows of a listing held as Python values at once

PUBLISHED = ".published"  # an S3 folder's last object: its file listing; without it the folder is unfinished


class ImmutableArtefactError(RuntimeError):
    """Different bytes were about to be written under a name that is already taken."""


class Store:
    """A root URI (local path or s3://bucket/prefix) and the filesystem that serves it."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root = root.rstrip("/") or "/"
        protocol = fsspec.utils.get_protocol(self.root)
        self.protocol = "file" if protocol in ("file", "local") else protocol
        options = dict(storage_options or {})
        if self.protocol == "s3":
            options = {**s3_options_from_env(), **options}
            options.setdefault("default_block_size", 8 * 2**20)
        self.fs = fsspec.filesystem(self.protocol, **options)
        if self.is_local:
            self.root = os.path.abspath(self.root.removeprefix("file://"))

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def uri(self, *parts: str) -> str:
        """Full URI of a path relative to the root (an absolute URI is returned as is)."""
        if parts and ("://" in parts[0] or parts[0].startswith("/")):
            return posixpath.join(*parts)
        return posixpath.join(self.root, *parts) if parts else self.root

    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.uri(rel)
        parent = posixpath.dirname(target)
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"  # listings skip this staging name
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # on disk before it has its name: a crash leaves old or new, not half
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)
        return target

    def create_bytes(self, rel: str, data: bytes) -> bool:
        """Give `data` the name `rel` only if no file has it yet: True when this call created the
        file, False when the name was already taken (that file is left as it is). For records
        that must be written exactly once however often a request is retried (rating votes).

        Locally the bytes go to a staged name (`<name>.tmp-<hex>`, which listings skip), are
        fsynced, and get their name by a hard link, which fails rather than overwrite when a
        concurrent writer got there first; the folder is fsynced after the link so that a
        created file survives a crash. On S3 it is one conditional PUT (If-None-Match: *,
        which AWS S3 and MinIO honour; a store that ignores the condition would overwrite)."""
        target = self.uri(rel)
        if not self.is_local:
            return self._create_remote(target, data)
        parent = posixpath.dirname(target)
        os.makedirs(parent, exist_ok=True)
        staged = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with open(staged, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(staged, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(staged)
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _create_remote(self, target: str, data: bytes) -> bool:
        """`create_bytes` on S3: a conditional PUT."""
        return self._conditional_put(lambda: self.fs.pipe_file(target, data, mode="create"))

    @staticmethod
    def _conditional_put(put: Callable[[], Any], attempts: int = 4) -> bool:
        """Run a conditional S3 write (If-None-Match: *): True when it created the object, False
        when the name was taken; asked again after a conflict with a concurrent writer."""
        attempt = 0
        while True:
            try:
                put()
                return True
            except FileExistsError:  # 412 PreconditionFailed: the name is taken
                return False
            except OSError as e:
                # 409 ConditionalRequestConflict: a concurrent conditional write of the same key was
                # in flight; asking again gets the outcome (412, or the name is still free).
                attempt += 1
                if e.errno != errno.EBUSY or attempt >= attempts:
                    raise
                time.sleep(0.05 * attempt)

    def write_once(self, rel: str, data: bytes) -> str:
        """Write `data` at `rel` unless the same bytes are already there; other bytes under an
        existing name are an error, never an overwrite (versioned artefacts are immutable)."""
        with tempfile.TemporaryDirectory(prefix="svd-dag-once-") as tmp:
            local = os.path.join(tmp, "data")
            with open(local, "wb") as f:
                f.write(data)
            return self.put_file_once(local, rel)

    def put_file_once(self, local_path: str, rel: str) -> str:
        """`write_once` for a local file, streamed (a manifest may be larger than memory).

        Locally the file appears by a hard link, which fails if a concurrent writer got there
        first; on S3 the upload is conditional (If-None-Match: *, multipart uploads included),
        so of two writers racing on one new name exactly one creates it. The loser's bytes must
        then be the winner's."""
        target = self.uri(rel)
        if self.exists(target):
            self._same_or_refuse(local_path, target)
            return target
        if not self.is_local:
            if not self._conditional_put(lambda: self.fs.put_file(local_path, target, mode="create")):
                self._same_or_refuse(local_path, target)
            return target
        os.makedirs(posixpath.dirname(target), exist_ok=True)
        staged = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(local_path, staged)
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.link(staged, target)
        except FileExistsError:
            self._same_or_refuse(local_path, target)
        finally:
            os.unlink(staged)
        return target

    def _same_or_refuse(self, local_path: str, target: str) -> None:
        if file_sha256(local_path) != sha256_of(self, target):
            raise ImmutableArtefactError(f"{target} already exists with other content; a versioned artefact is "
                                         "written once and never overwritten")

    def put_dir(self, local_dir: str, rel: str) -> str:
        """Copy a local folder to `rel` under the root, once (a checkpoint folder is written
        once): complete or not at all, and never over a published folder.

        Locally the folder appears by one rename. S3 has no rename, so every file is uploaded
        first and `PUBLISHED` last, by a conditional PUT: a listing of the folder's files with
        their sizes and SHA-256. A folder without it is an upload that died (a killed pod, a
        lost connection), never one that was reported; the next `put_dir` of the same folder
        finishes it instead of refusing it."""
        target = self.uri(rel)
        if self.folder_published(target):
            raise ImmutableArtefactError(f"{target} already exists: a versioned folder is written once, never replaced")
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copytree(local_dir, staging)
            os.rename(staging, target)
            return target
        listing = json.dumps({"files": folder_listing(local_dir)}, indent=1, sort_keys=True).encode()
        self.fs.put(local_dir.rstrip("/") + "/", target + "/", recursive=True)
        marker = posixpath.join(target, PUBLISHED)
        if not self._create_remote(marker, listing) and self.read_bytes(marker) != listing:
            raise ImmutableArtefactError(f"{target} was published by another writer with other files while this "
                                         "one uploaded; a versioned folder is written once")
        return target

    def folder_published(self, rel: str) -> bool:
        """Whether the folder `rel` is complete: it exists (local folders appear whole), or on
        S3 its `PUBLISHED` listing exists."""
        target = self.uri(rel)
        if self.is_local:
            return os.path.isdir(target)
        return self.exists(posixpath.join(target, PUBLISHED))

    def get_dir(self, uri: str, local_dir: str) -> str:
        """Copy the folder at `uri` (under this store) to `local_dir`; returns `local_dir`."""
        os.makedirs(local_dir, exist_ok=True)
        self.fs.get(self.uri(uri).rstrip("/") + "/", local_dir.rstrip("/") + "/", recursive=True)
        return local_dir

    def read_bytes(self, uri: str) -> bytes:
        return self.fs.cat_file(self.uri(uri))

    def open(self, uri: str, mode: str = "rb"):
        return self.fs.open(self.uri(uri), mode)

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self.uri(uri))

    def size(self, uri: str) -> int:
        return int(self.fs.size(self.uri(uri)))

    def list_files(self) -> list[str]:
        """Every file under the root, as full URIs, sorted (the inventory is deterministic)."""
        return self.list_files_detailed().column("uri").to_pylist()

    def list_files_detailed(self) -> pa.Table:
        """Every file under the root, sorted by URI, with its size and modification stamp
        (LISTING_SCHEMA), all from the listing itself: no request per file, so a bucket of 10^6
        videos is one paged LIST. What it holds is the Arrow table (~100 bytes a file)."""
        return pa.Table.from_batches(list(self.iter_listing()), schema=LISTING_SCHEMA).sort_by("uri")

    def iter_listing(self, batch_rows: int = LISTING_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The files under the root as LISTING_SCHEMA batches, in the order the listing arrives
        (a page of the LIST on S3, a folder's entries on disk). Unlike fsspec's `find`, which
        holds an info dict per file for the whole bucket (~1.7 KB each) and leaves them in s3fs's
        listings cache of a filesystem instance that lives as long as the process (the sensor's
        daemon), only `batch_rows` files are Python objects at a time."""
        if not self.fs.exists(self.root):
            raise FileNotFoundError(f"raw video root does not exist: {self.root}")
        if self.is_local:
            entries = _local_entries(self.root)
        elif self.protocol == "s3" and hasattr(self.fs, "_iterdir"):
            entries = _s3_entries(self.fs, self.root)
        else:
            found = self.fs.find(self.root, detail=True)
            entries = ((self.full_uri(n), int(i.get("size") or 0), modified_stamp(i)) for n, i in found.items())
        yield from _listing_batches(entries, batch_rows)

    def full_uri(self, path: str) -> str:
        """A path as fsspec lists it (no scheme on S3) as a full URI."""
        prefix = "s3://" if self.protocol == "s3" else ""
        return prefix + path if prefix and not path.startswith(prefix) else path

    def local_path(self, uri: str) -> str | None:
        """A path the OS can open directly, or None when the file is remote."""
        return self.uri(uri) if self.is_local else None


def _listing_batches(entries: Iterable[tuple[str, int, str]], batch_rows: int) -> Iterator[pa.RecordBatch]:
    batch: list[tuple[str, int, str]] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) >= batch_rows:
            yield pa.RecordBatch.from_arrays([pa.array(c) for c in zip(*batch)], schema=LISTING_SCHEMA)
            batch = []
    if batch:
        yield pa.RecordBatch.from_arrays([pa.array(c) for c in zip(*batch)], schema=LISTING_SCHEMA)


def _local_entries(root: str) -> Iterator[tuple[str, int, str]]:
    """(path, size, stamp) of every file under `root`, one folder's scandir at a time. Size and
    stamp are those `fs.info(path)` reports (a symbolic link: its target's), so an unchanged file
    compares equal to what its inventory row recorded; a link to a folder is listed as a file
    (as fsspec lists it) and is quarantined when read."""
    folders = [root]
    while folders:
        try:
            scan = os.scandir(folders.pop())
        except (FileNotFoundError, NotADirectoryError):  # removed while the listing ran
            continue
        with scan:
            for entry in scan:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                        continue
                    st = entry.stat(follow_symlinks=True)
                except FileNotFoundError:
                    if not entry.is_symlink():
                        continue  # removed while the listing ran
                    st = entry.stat(follow_symlinks=False)  # a dangling link: listed, quarantined when read
                yield entry.path, int(st.st_size), str(st.st_mtime)


def _s3_entries(fs: Any, root: str, page: int = 1000) -> Iterator[tuple[str, int, str]]:
    """(uri, size, stamp) of every object under the prefix `root`, a LIST page at a time, through
    s3fs's own paged iterator (its retries per page, its version handling); folder markers
    (keys ending in "/") are not files."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(root)
    objects = fs._iterdir(bucket, delimiter="", prefix=f"{key.rstrip('/')}/" if key else "")

    async def next_page() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for info in objects:
            out.append(info)
            if len(out) >= page:
                break
        return out

    while infos := sync(fs.loop, next_page):
        for info in infos:
            if info.get("type") == "file" and not info["name"].endswith("/"):
                yield f"s3://{info['name']}", int(info.get("size") or 0), modified_stamp(info)


def modified_stamp(info: dict[str, Any]) -> str:
    """What changes when a file is rewritten, from an fsspec info or listing entry: the ETag on
    S3, the mtime on disk."""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def listing_fingerprint(listing: pa.Table) -> str:
    """Hash of a listing's (uri, size, stamp): changes when any file is added, removed or rewritten."""
    h = hashlib.sha256()
    for batch in listing.select(["uri", "size_bytes", "modified"]).to_batches(max_chunksize=65536):
        for uri, size, stamp in zip(*(c.to_pylist() for c in batch.columns)):
            h.update(f"{uri}\0{size}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def folder_listing(folder: str) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every file under a local folder."""
    listing = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            listing[rel] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    return listing


def file_sha256(path: str, chunk: int = 8 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(store: Store, uri: str, chunk: int = 8 * 2**20) -> str:
    h = hashlib.sha256()
    with store.open(uri, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(store: Store, folder: str, suffix: str) -> str:
    """sha256 over the relative paths and bytes of every file under `folder` ending in `suffix`,
    in path order: the checkpoint's weights digest (its data version), local or s3://."""
    root = store.uri(folder).rstrip("/")
    paths = sorted(store.full_uri(p) for p in store.fs.find(root) if p.endswith(suffix))
    h = hashlib.sha256()
    for path in paths:
        h.update(posixpath.relpath(path, root).encode())
        with store.fs.open(path, "rb") as f:
            for block in iter(lambda: f.read(8 * 2**20), b""):
                h.update(block)
    return h.hexdigest()


def local_folder(uri: str, cache_dir: str, options: dict[str, Any] | None = None) -> str:
    """A local folder with the contents of folder `uri`: `uri` itself when it is local, else a
    copy made once under `cache_dir` (a `.complete` marker says the copy finished).

    The copy is made under a private name and renamed into place, so processes that need
    the same folder at once (ranks of one machine, or "machines" sharing a disk) never read
    a file another one is still writing."""
    if "://" not in uri or uri.startswith("file://"):
        return uri.removeprefix("file://")
    if not os.path.exists(os.path.join(cache_dir, ".complete")):
        root, rel = uri.rstrip("/").rsplit("/", 1)
        staging = f"{cache_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            Store(root, options).get_dir(rel, staging)
            open(os.path.join(staging, ".complete"), "w").close()
            os.makedirs(os.path.dirname(cache_dir.rstrip("/")), exist_ok=True)
            try:
                os.rename(staging, cache_dir)
            except OSError:  # another process put its complete copy there first
                if not os.path.exists(os.path.join(cache_dir, ".complete")):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return cache_dir
