"""The catalog: one table per tabular asset, plus `quarantine`, in a DuckLake (`svd_dag.lake`).

Every write is one transaction that is retried whole when another writer wins a conflict
(two runs upserting the same table, a locked SQLite metadata file), so concurrent steps on
one machine or many never fail for it and never lose a row. Connections are short-lived
(open, work, close): nothing holds the catalog between batches.

Memory stays bounded whatever the table sizes: DuckDB gets a memory limit and spills to a
scratch folder, and Python reads big results a record batch at a time (`worklist`), never
as one list.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import duckdb

from svd_dag.lake import LAKE, LakeConfig, S3Access, is_retryable, lake_cursor, open_lake, release_lake

if TYPE_CHECKING:  # pyarrow is imported where it is used: a console answer needs none of its ~0.5 s import
    import pyarrow as pa
    import pyarrow.parquet as pq

T = TypeVar("T")
INTERNAL_RETRIES = 3  # fresh DuckDB instances tried after an internal error before it is raised
QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    uri VARCHAR NOT NULL,
    sha256 VARCHAR,
    stage VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL
)
"""


def _untyped_nulls_as_text(data: pa.Table) -> pa.Table:
    """A column that is all None in the first batch would create a NULL-typed column that
    later values cannot be cast into; make it VARCHAR instead."""
    import pyarrow as pa

    for i, f in enumerate(data.schema):
        if pa.types.is_null(f.type):
            data = data.set_column(i, pa.field(f.name, pa.string()), data.column(i).cast(pa.string()))
    return data


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The catalog's tables (not the connection's temp tables)."""
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = ? "
                                      "AND table_schema = 'main'", [LAKE]).fetchall()}


def replace_table_on(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table | str) -> None:
    """`name` := `data` (an Arrow table, or a SELECT run in the catalog) on an open connection."""
    if isinstance(data, str):
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS {data}')
        return
    con.register("incoming", data)
    con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming')
    con.unregister("incoming")


def upsert_on(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table, key: Sequence[str] | None) -> None:
    """Insert `data` replacing rows with the same key (no key: plain append of rows known to be
    new), on an open connection inside the caller's transaction; columns a newer writer added
    are added to the table."""
    data = _untyped_nulls_as_text(data)
    con.register("incoming", data)
    con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM incoming LIMIT 0')
    have = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
    for column, kind in con.execute("SELECT column_name, column_type FROM (DESCRIBE incoming)").fetchall():
        if column not in have:  # a newer writer added a column: older rows read NULL there
            con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{column}" {kind}')
    if data.num_rows:
        if key:
            match = " AND ".join(f't."{k}" IS NOT DISTINCT FROM i."{k}"' for k in key)
            con.execute(f'DELETE FROM "{name}" t WHERE EXISTS (SELECT 1 FROM incoming i WHERE {match})')
        con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM incoming')
    con.unregister("incoming")


def quarantine_on(con: duckdb.DuckDBPyConnection, records: Sequence[dict[str, Any]]) -> None:
    """Quarantine records (uri, sha256, stage, reason), keyed by (uri, stage), in the caller's transaction."""
    if not records:
        return
    import pyarrow as pa

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    con.execute(QUARANTINE_DDL)
    upsert_on(con, "quarantine", pa.Table.from_pylist([
        {"uri": r["uri"], "sha256": r.get("sha256"), "stage": r["stage"], "reason": r["reason"], "quarantined_at": now}
        for r in records]), key=["uri", "stage"])


def release_on(con: duckdb.DuckDBPyConnection, stage: str, uris: Sequence[str]) -> None:
    """Inputs that now process cleanly leave the quarantine of `stage`, in the caller's transaction."""
    if uris and "quarantine" in table_names(con):
        con.execute("DELETE FROM quarantine WHERE stage = ? AND uri IN (SELECT unnest(?))", [stage, list(uris)])


def follow_quarantine_on(con: duckdb.DuckDBPyConnection, stage: str, relation: str) -> None:
    """The quarantine of `stage` follows `relation` (uri, sha256, status, reason), in SQL and in
    the caller's transaction: its rows whose status is not 'ok' are quarantined (one still bad
    in the same way keeps its first `quarantined_at`), its other rows leave the quarantine."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    con.execute(QUARANTINE_DDL)
    con.execute(f"""DELETE FROM quarantine q WHERE q.stage = $stage AND EXISTS (
                      SELECT 1 FROM {relation} r WHERE r.uri = q.uri AND (r.status = 'ok'
                      OR r.sha256 IS DISTINCT FROM q.sha256 OR r.reason IS DISTINCT FROM q.reason))""", {"stage": stage})
    con.execute(f"""INSERT INTO quarantine (uri, sha256, stage, reason, quarantined_at)
                    SELECT r.uri, r.sha256, $stage, r.reason, $now FROM {relation} r WHERE r.status != 'ok'
                    AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.uri = r.uri AND q.stage = $stage)""",
                {"stage": stage, "now": now})


class Catalog:
    def __init__(self, config: LakeConfig, timeout_s: float = 300.0):
        self.config = config
        self.timeout_s = timeout_s

    @classmethod
    def embedded(cls, folder: str, **kwargs: Any) -> "Catalog":
        """The no-server default: SQLite metadata and Parquet tables in one local folder."""
        return cls(LakeConfig(f"sqlite:{os.path.join(folder, 'catalog.sqlite')}", os.path.join(folder, "catalog"),
                              **kwargs))

    @classmethod
    def from_settings(cls, settings) -> "Catalog":
        return cls(LakeConfig(settings.catalog_metadata, settings.catalog_data_uri, password=settings.catalog_password,
                              s3=S3Access.from_env(), scratch_dir=os.path.join(settings.home, "tmp"),
                              memory_limit=settings.catalog_memory_limit))

    @property
    def path(self) -> str:
        """The catalog as shown in metadata and logs (no secrets)."""
        return self.config.describe()

    def _retrying(self, attempt: Callable[[], T]) -> T:
        deadline, delay, internal = time.monotonic() + self.timeout_s, 0.05, 0
        while True:
            try:
                return attempt()
            except duckdb.InternalException:
                # DuckLake 1.4.4 on SQLite metadata can read a row another process is committing
                # ("Calling GetValueInternal on a value that is NULL", ~1 run in 8 of the
                # two-writer test under load). An internal error invalidates the process's
                # DuckDB instance: drop it, and run the whole transaction again on a fresh one.
                internal += 1
                release_lake(self.config)
                if internal > INTERNAL_RETRIES or time.monotonic() > deadline:
                    raise
            except duckdb.Error as e:
                if not is_retryable(e) or time.monotonic() > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the lake; opening is retried while another writer holds a lock.
        Writes through it commit statement by statement: use `write` for anything that must
        commit together. `read_only` attaches the lake read-only on a connection of its own
        (for consoles: any write then fails); the code location's own reads share the
        process's attached lake."""
        if read_only and self.config.exists():
            con = self._retrying(lambda: open_lake(self.config, read_only=True))
        else:
            con = self._retrying(lambda: lake_cursor(self.config))
        try:
            yield con
        finally:
            con.close()

    def write(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work(con)` in one transaction: all of it commits, or none. On a conflict with
        another writer the whole transaction runs again, so `work` must be safe to repeat
        (everything here is: upserts, replaces, write-once files)."""
        def attempt() -> T:
            with self.connect() as con:
                con.execute("BEGIN")
                try:
                    result = work(con)
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(duckdb.Error):
                        con.execute("ROLLBACK")
                    raise
                return result
        return self._retrying(attempt)

    @contextlib.contextmanager
    def worklist(self, sql: str, params: Sequence[Any] | dict | None = None) -> Iterator[pq.ParquetFile]:
        """The result of `sql`, spooled to a local Parquet file that the caller reads a batch
        at a time (`iter_batches`) while it writes to the catalog between batches: no
        connection stays open, and no Python list holds the whole result."""
        import pyarrow.parquet as pq

        os.makedirs(self.config.scratch_dir, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="worklist-", dir=self.config.scratch_dir)
        try:
            target = os.path.join(folder, "work.parquet")
            with self.connect() as con:
                con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)", params or None)
            yield pq.ParquetFile(target)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def scalar(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        with self.connect() as con:
            row = con.execute(sql, params or None).fetchone()
        return row[0] if row else None

    def tables(self) -> set[str]:
        if not self.config.exists():
            return set()
        with self.connect() as con:
            return table_names(con)

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        with self.connect() as con:
            return con.execute(sql, params or None).fetch_arrow_table()

    def rows(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict[str, Any]]:
        return self.query(sql, params).to_pylist()

    def records(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict[str, Any]]:
        """`rows` through DuckDB's own Python values, without Arrow (for console answers)."""
        with self.connect() as con:
            cursor = con.execute(sql, params or None)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r)) for r in cursor.fetchall()]

    def replace_table(self, name: str, data: pa.Table) -> None:
        """Make `name` exactly `data` (an inventory snapshot, a manifest)."""
        self.write(lambda con: replace_table_on(con, name, data))

    def upsert(self, name: str, data: pa.Table, key: Sequence[str]) -> None:
        """Insert `data`, replacing rows with the same key: re-running never duplicates."""
        self.write(lambda con: upsert_on(con, name, data, key))

    def append(self, name: str, data: pa.Table) -> None:
        """Insert rows known to be new, without a key check (bulk loads)."""
        self.write(lambda con: upsert_on(con, name, data, key=None))

    def quarantine(self, records: Sequence[dict[str, Any]]) -> None:
        """Record inputs that could not be processed, keyed by (uri, stage)."""
        if records:
            self.write(lambda con: quarantine_on(con, records))

    def release_from_quarantine(self, stage: str, uris: Sequence[str]) -> None:
        """An input that now processes cleanly leaves the quarantine for that stage."""
        if uris and "quarantine" in self.tables():
            self.write(lambda con: release_on(con, stage, uris))

    def quarantined(self, stage: str | None = None) -> list[dict[str, Any]]:
        if "quarantine" not in self.tables():
            return []
        if stage is None:
            return self.rows("SELECT * FROM quarantine ORDER BY uri, stage")
        return self.rows("SELECT * FROM quarantine WHERE stage = ? ORDER BY uri", [stage])

    def compact(self) -> None:
        """Merge the small Parquet files that per-batch commits leave and flush inlined rows
        into files. Snapshots are kept (nothing is expired), so time travel still works."""
        def work(con):
            con.execute(f"CALL ducklake_flush_inlined_data('{LAKE}')")
            con.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')")
        with self.connect() as con:  # maintenance calls run outside an explicit transaction
            self._retrying(lambda: work(con))

    def snapshot(self) -> int:
        """The id of the catalog's latest snapshot (every commit makes one)."""
        return int(self.scalar(f"SELECT max(snapshot_id) FROM ducklake_snapshots('{LAKE}')"))
