"""Opening the catalog: a DuckLake (metadata in SQLite or Postgres, tables as Parquet files
under the storage root, local or s3://) attached to a fresh in-memory DuckDB connection.

Why DuckLake (docs/catalog.md has the comparison): several processes and machines write at
once through the Postgres metadata, every commit is a snapshot that stays readable (time
travel), tables live as Parquet in object storage, and it is plain DuckDB SQL. The DuckDB
extensions come from PyPI wheels (`duckdb-ext-*`, built for DuckDB 1.4.4): nothing is
downloaded at run time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlparse

import duckdb

LAKE = "lake"  # the attached catalog's name; `USE lake` makes plain table names refer to it
# Conflicts and locks that a retry of the whole transaction resolves (another writer won).
RETRYABLE = ("Transaction conflict", "write-write conflict", "database is locked", "Could not set lock",
             "Conflicting lock",
             "SQLITE_BUSY", "could not serialize access", "deadlock detected",
             "Failed to initialize DuckLake")  # two processes creating the metadata tables at once


def extension_directory() -> str:
    """Where the `duckdb-ext-*` wheels put their extension files."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the DuckDB extension wheels are missing: pip install duckdb-ext-ducklake duckdb-ext-sqlite "
                           "duckdb-ext-postgres duckdb-ext-httpfs (all built for duckdb==1.4.4)")
    return os.path.join(list(spec.submodule_search_locations)[0], "extensions")


@dataclass(frozen=True)
class S3Access:
    """How DuckDB's own S3 client (httpfs) reaches the bucket holding the lake's data files."""

    endpoint_url: str | None = None  # e.g. MinIO or a test server; None: AWS
    key_id: str | None = None
    secret: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "S3Access":
        env = os.environ if env is None else env
        return cls(env.get("SVD_DAG_S3_ENDPOINT_URL") or None, env.get("AWS_ACCESS_KEY_ID") or None,
                   env.get("AWS_SECRET_ACCESS_KEY") or None, env.get("AWS_DEFAULT_REGION") or "us-east-1")

    def secret_sql(self) -> str:
        parts = ["TYPE s3", f"REGION '{_q(self.region)}'"]
        if self.key_id:
            parts += [f"KEY_ID '{_q(self.key_id)}'", f"SECRET '{_q(self.secret or '')}'"]
        if self.endpoint_url:
            url = urlparse(self.endpoint_url)
            parts += [f"ENDPOINT '{_q(url.netloc)}'", "URL_STYLE 'path'", f"USE_SSL {str(url.scheme == 'https').lower()}"]
        return f"CREATE OR REPLACE TEMPORARY SECRET svd_dag_s3 ({', '.join(parts)})"


def _q(text: str) -> str:
    return text.replace("'", "''")


@dataclass(frozen=True)
class LakeConfig:
    """Where the catalog is. `metadata`: `sqlite:<file>` (embedded default: one folder, no
    server), `postgres:<libpq dsn>` (several machines) or `duckdb:<file>` (one process at a
    time). `data_path`: folder or s3:// prefix of the tables' Parquet files."""

    metadata: str
    data_path: str
    password: str | None = None  # for postgres, kept out of the DSN that logs and metadata show
    s3: S3Access = field(default_factory=S3Access)
    memory_limit: str = "1GB"
    scratch_dir: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "svd-dag-duckdb"))
    inline_rows: int = 1000  # small inserts live in the metadata database until compaction flushes them

    def __post_init__(self):
        kind = self.kind
        if kind not in ("sqlite", "postgres", "duckdb"):
            raise ValueError(f"catalog metadata must start with sqlite:, postgres: or duckdb:, got {self.metadata!r}")

    @property
    def kind(self) -> str:
        return self.metadata.split(":", 1)[0]

    @property
    def is_local(self) -> bool:
        return self.kind in ("sqlite", "duckdb")

    @property
    def local_file(self) -> str | None:
        return self.metadata.split(":", 1)[1] if self.is_local else None

    def describe(self) -> str:
        """The catalog as shown in metadata and logs (no password, even one written into the DSN)."""
        from svd_dag.redact import redact

        return redact(f"ducklake:{self.metadata} data={self.data_path}")

    def _attach_target(self) -> str:
        if self.kind == "duckdb":
            return f"ducklake:{self.local_file}"
        if self.kind == "postgres" and self.password:
            return f"ducklake:{self.metadata} password={self.password}"
        return f"ducklake:{self.metadata}"

    def exists(self) -> bool:
        return not self.is_local or os.path.exists(self.local_file)


_SHARED: "OrderedDict[tuple, duckdb.DuckDBPyConnection]" = OrderedDict()
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 8


def lake_cursor(cfg: LakeConfig) -> duckdb.DuckDBPyConnection:
    """A new connection (cursor) to this process's DuckDB instance that has the lake attached.

    Loading the extensions and attaching costs ~0.2 s, so each process does it once per
    catalog; a cursor is a connection of its own (own transaction, temp tables, registered
    Arrow data) and starts every transaction at the lake's latest snapshot, so commits by
    other processes are seen. A DuckDB-file metadata catalog is locked while attached, so it
    is attached per use instead."""
    if cfg.kind == "duckdb":
        return open_lake(cfg)
    key = (os.getpid(), cfg)
    with _SHARED_LOCK:
        con = _SHARED.get(key)
        if con is None:
            con = _SHARED[key] = open_lake(cfg)
            while len(_SHARED) > _SHARED_MAX:
                _SHARED.popitem(last=False)[1].close()
        _SHARED.move_to_end(key)
        cursor = con.cursor()
    cursor.execute(f"USE {LAKE}")
    return cursor


def release_lake(cfg: LakeConfig) -> None:
    """Close this process's attached instance of the lake (and free its buffer pool)."""
    with _SHARED_LOCK:
        con = _SHARED.pop((os.getpid(), cfg), None)
    if con is not None:
        con.close()


def open_lake(cfg: LakeConfig, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A new DuckDB instance with the lake attached and selected (`USE lake`)."""
    os.makedirs(cfg.scratch_dir, exist_ok=True)
    if cfg.is_local:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.local_file)), exist_ok=True)
    if cfg.kind == "sqlite" and not os.path.exists(cfg.local_file):
        _new_sqlite_in_wal_mode(cfg.local_file)
    if "://" not in cfg.data_path:
        os.makedirs(cfg.data_path, exist_ok=True)
    con = duckdb.connect(":memory:", config={
        "extension_directory": extension_directory(), "autoinstall_known_extensions": False,
        "autoload_known_extensions": True, "memory_limit": cfg.memory_limit, "temp_directory": cfg.scratch_dir})
    try:
        con.execute("LOAD ducklake")
        if cfg.data_path.startswith("s3://"):
            con.execute("LOAD httpfs")
            con.execute(cfg.s3.secret_sql())
        options = [f"DATA_PATH '{_q(cfg.data_path.rstrip('/') + '/')}'"]
        options += ["READ_ONLY"] if read_only else [f"DATA_INLINING_ROW_LIMIT {int(cfg.inline_rows)}"]
        con.execute(f"ATTACH '{_q(cfg._attach_target())}' AS {LAKE} ({', '.join(options)})")
        con.execute(f"USE {LAKE}")
    except BaseException:
        con.close()
        raise
    return con


def _new_sqlite_in_wal_mode(path: str) -> None:
    """Write-ahead logging lets readers go on while another process commits (the default
    rollback journal locks them out); the mode is stored in the file, so set it once.

    Two writers may start on a fresh home at the same moment: the file is made under a
    private name and linked into place, so exactly one wins and the other opens its file
    (switching the journal mode of a file someone else has open fails with "locked")."""
    import sqlite3

    private = f"{path}.{os.getpid()}.{threading.get_ident()}.new"
    try:
        with contextlib.closing(sqlite3.connect(private)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        try:
            os.link(private, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: the old, racy way
            if not os.path.exists(path):
                os.rename(private, path)
    finally:
        for leftover in (private, private + "-wal", private + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def is_retryable(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, duckdb.Error) and any(marker.lower() in text.lower() for marker in RETRYABLE)
