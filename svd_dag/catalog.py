"""The DuckDB catalog: one table per tabular asset, plus `quarantine`.

Connections are short-lived (open, write, close) because Dagster runs sibling assets in
separate processes and DuckDB allows one writer per file: a writer that finds the file
locked waits and retries instead of failing the step.

Memory stays bounded whatever the table sizes: DuckDB gets a memory limit and spills to a
temp folder beside the catalog, and Python reads big results a record batch at a time
(`worklist`), never as one list.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import tempfile
import time
from typing import Any, Iterator, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    uri VARCHAR NOT NULL,
    sha256 VARCHAR,
    stage VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL,
    PRIMARY KEY (uri, stage)
)
"""


def _untyped_nulls_as_text(data: pa.Table) -> pa.Table:
    """A column that is all None in the first batch would create a NULL-typed column that
    later values cannot be cast into; make it VARCHAR instead."""
    for i, f in enumerate(data.schema):
        if pa.types.is_null(f.type):
            data = data.set_column(i, pa.field(f.name, pa.string()), data.column(i).cast(pa.string()))
    return data


DEFAULT_MEMORY_LIMIT = "1GB"


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def replace_table_on(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table | str) -> None:
    """`name` := `data` (an Arrow table, or a SELECT run in the catalog) on an open connection."""
    if isinstance(data, str):
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS {data}')
        return
    con.register("incoming", data)
    con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming')
    con.unregister("incoming")


def upsert_on(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table, key: Sequence[str]) -> None:
    """Insert `data` replacing rows with the same key, on an open connection (inside the
    caller's transaction); columns a newer writer added are added to the table."""
    data = _untyped_nulls_as_text(data)
    con.register("incoming", data)
    con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM incoming LIMIT 0')
    have = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
    for column, kind in con.execute("SELECT column_name, column_type FROM (DESCRIBE incoming)").fetchall():
        if column not in have:  # a newer writer added a column: older rows read NULL there
            con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{column}" {kind}')
    if data.num_rows:
        match = " AND ".join(f't."{k}" IS NOT DISTINCT FROM i."{k}"' for k in key)
        con.execute(f'DELETE FROM "{name}" t WHERE EXISTS (SELECT 1 FROM incoming i WHERE {match})')
        con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM incoming')
    con.unregister("incoming")


class Catalog:
    def __init__(self, path: str, lock_timeout_s: float = 120.0, memory_limit: str = DEFAULT_MEMORY_LIMIT):
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self.memory_limit = memory_limit

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(self.path, read_only=read_only and os.path.exists(self.path),
                                     config={"memory_limit": self.memory_limit,
                                             "temp_directory": self.path + ".tmp"})
                break
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2 + random.random() * 0.5)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write connection whose statements commit together, or not at all."""
        with self.connect() as con:
            con.execute("BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextlib.contextmanager
    def worklist(self, sql: str, params: Sequence[Any] | dict | None = None) -> Iterator[pq.ParquetFile]:
        """The result of `sql`, spooled to a local Parquet file that the caller reads a batch
        at a time (`iter_batches`) while it writes to the catalog between batches: no
        connection stays open, and no Python list holds the whole result."""
        folder = tempfile.mkdtemp(prefix="worklist-", dir=os.path.dirname(os.path.abspath(self.path)))
        try:
            target = os.path.join(folder, "work.parquet")
            with self.connect(read_only=True) as con:
                con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)", params or None)
            yield pq.ParquetFile(target)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def scalar(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        with self.connect(read_only=True) as con:
            row = con.execute(sql, params or None).fetchone()
        return row[0] if row else None

    def tables(self) -> set[str]:
        if not os.path.exists(self.path):
            return set()
        with self.connect(read_only=True) as con:
            return table_names(con)

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params or None).to_arrow_table()

    def rows(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict[str, Any]]:
        return self.query(sql, params).to_pylist()

    def replace_table(self, name: str, data: pa.Table) -> None:
        """Make `name` exactly `data` (an inventory snapshot, a manifest)."""
        with self.connect() as con:
            replace_table_on(con, name, data)

    def upsert(self, name: str, data: pa.Table, key: Sequence[str]) -> None:
        """Insert `data`, replacing rows with the same key: re-running never duplicates."""
        with self.transaction() as con:
            upsert_on(con, name, data, key)

    def delete_where(self, name: str, column: str, values: Sequence[Any]) -> None:
        if name not in self.tables() or not values:
            return
        with self.connect() as con:
            con.execute(f'DELETE FROM "{name}" WHERE "{column}" IN (SELECT unnest(?))', [list(values)])

    def quarantine(self, records: Sequence[dict[str, Any]]) -> None:
        """Record inputs that could not be processed, keyed by (uri, stage)."""
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        with self.connect() as con:
            con.execute(QUARANTINE_DDL)
            for r in records:
                con.execute(
                    "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?)",
                    [r["uri"], r.get("sha256"), r["stage"], r["reason"], now],
                )

    def release_from_quarantine(self, stage: str, uris: Sequence[str]) -> None:
        """An input that now processes cleanly leaves the quarantine for that stage."""
        if not uris:
            return
        with self.connect() as con:
            con.execute(QUARANTINE_DDL)
            con.execute("DELETE FROM quarantine WHERE stage = ? AND uri IN (SELECT unnest(?))", [stage, list(uris)])

    def quarantined(self, stage: str | None = None) -> list[dict[str, Any]]:
        if "quarantine" not in self.tables():
            return []
        if stage is None:
            return self.rows("SELECT * FROM quarantine ORDER BY uri, stage")
        return self.rows("SELECT * FROM quarantine WHERE stage = ? ORDER BY uri", [stage])
