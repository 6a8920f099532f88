"""The `svd-dag` console script: questions to the catalog from a shell.

    svd-dag sql "SELECT dataset_version, kept FROM dataset_versions"          # CSV on stdout
    svd-dag sql --json "SELECT * FROM filter_decisions WHERE clip_id = 'x'"   # a JSON list of rows
    svd-dag tables                                                             # table -> rows

Every asset's table has the asset's name. The catalog is the one the environment configures
(`SVD_DAG_HOME`, as the code location reads it), opened read-only: a statement that would
change it fails. Rows are streamed a batch at a time, so a large result does not have to
fit in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import sys
from typing import Any, Iterator, Sequence

BATCH_ROWS = 10_000


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _batches(cat, sql: str) -> tuple[list[str], Iterator[list[dict]]]:
    import duckdb

    if not cat.config.exists():
        raise SystemExit(f"svd-dag: no catalog at {cat.path} (set SVD_DAG_HOME, or materialize an asset first)")
    stack = contextlib.ExitStack()
    con = stack.enter_context(cat.connect(read_only=True))
    try:
        reader = con.execute(sql).fetch_record_batch(BATCH_ROWS)
    except duckdb.Error as e:
        stack.close()
        raise SystemExit(f"svd-dag sql: {type(e).__name__}: {e}") from None

    def rows() -> Iterator[list[dict]]:
        with stack:
            for batch in reader:
                yield batch.to_pylist()

    return reader.schema.names, rows()


def sql_command(cat, sql: str, as_json: bool, out=sys.stdout) -> None:
    names, batches = _batches(cat, sql)
    if as_json:
        out.write("[")
        first = True
        for batch in batches:
            for row in batch:
                out.write(("" if first else ",\n") + json.dumps({k: _plain(v) for k, v in row.items()}, default=str))
                first = False
        out.write("]\n")
        return
    writer = csv.writer(out)
    writer.writerow(names)
    for batch in batches:
        for row in batch:
            writer.writerow([json.dumps(v, default=str) if isinstance(v, (list, dict)) else _plain(v)
                             for v in row.values()])


def tables_command(cat, out=sys.stdout) -> None:
    writer = csv.writer(out)
    writer.writerow(["table", "rows"])
    for name in sorted(cat.tables()):
        writer.writerow([name, cat.scalar(f'SELECT count(*) FROM "{name}"')])


def main(argv: Sequence[str] | None = None) -> None:
    from svd_dag.catalog import Catalog
    from svd_dag.settings import load_settings

    parser = argparse.ArgumentParser(prog="svd-dag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sql = sub.add_parser("sql", help="run read-only SQL over the catalog (CSV out, or --json)")
    sql.add_argument("query")
    sql.add_argument("--json", action="store_true", help="a JSON list of rows instead of CSV")
    sub.add_parser("tables", help="the catalog's tables and their row counts")
    args = parser.parse_args(argv)
    cat = Catalog.from_settings(load_settings())
    if args.command == "sql":
        sql_command(cat, args.query, args.json)
    elif args.command == "tables":
        tables_command(cat)


if __name__ == "__main__":
    main()
