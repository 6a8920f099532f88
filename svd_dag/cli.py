"""The `svd-dag` console script: questions to the catalog from a shell.

    svd-dag sql "SELECT dataset_version, kept FROM dataset_versions"          # CSV on stdout
    svd-dag sql --json "SELECT * FROM filter_decisions WHERE clip_id = 'x'"   # a JSON list of rows
    svd-dag tables                                                             # table -> rows
    svd-dag lineage up i2v_checkpoint          # checkpoint -> parents, datasets, annotators, raw sha256s
    svd-dag lineage down <sha256 | uri>        # raw video -> clips, per-version outcomes, checkpoints
    svd-dag lineage verify [<checkpoint>]      # re-hash what the record names; exit 1 on any mismatch
    svd-dag rating serve [--tasks <uri>]       # the human rating page (svd-dag rating --help)

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


def lineage_command(cat, settings, args, out=sys.stdout) -> int:
    from svd_dag.lineage import render
    from svd_dag.lineage.down import lineage_down
    from svd_dag.lineage.registry import registry_for
    from svd_dag.lineage.up import LineageError, lineage_up
    from svd_dag.lineage.verify import lineage_verify

    if not cat.config.exists():
        raise SystemExit(f"svd-dag: no catalog at {cat.path} (set SVD_DAG_HOME, or materialize an asset first)")
    registry = registry_for(settings.mlflow_tracking_uri) if args.lineage != "verify" else None
    try:
        if args.lineage == "up":
            report, text = lineage_up(cat, args.checkpoint, args.variant, registry), render.up_text
        elif args.lineage == "down":
            report, text = lineage_down(cat, args.video, registry), render.down_text
        else:
            report, text = lineage_verify(cat, args.checkpoint), render.verify_text
    except LineageError as e:
        raise SystemExit(f"svd-dag lineage {args.lineage}: {e}") from None
    if args.json:  # one line: the C encoder (an indented dump of 10^5 videos takes seconds in pure Python)
        out.write(json.dumps(report, default=str) + "\n")
    else:
        out.write(text(report, args.limit) if args.lineage != "verify" else text(report))
    return 0 if report.get("ok", True) else 1


def _lineage_parser(sub) -> None:
    lineage = sub.add_parser("lineage", help="audit: a checkpoint's lineage (up), a raw video's (down), verify hashes")
    which = lineage.add_subparsers(dest="lineage", required=True)
    up = which.add_parser("up", help="checkpoint -> parents, dataset versions, annotators, code, raw videos")
    up.add_argument("checkpoint", help="asset name (its current checkpoint), asset@data_version, URI or MLflow model id")
    up.add_argument("--variant", default=None, help="a sub-name of assets that train several (camera LoRAs)")
    down = which.add_parser("down", help="raw video -> clips, per-version outcome, every checkpoint it fed")
    down.add_argument("video", help="the raw video's sha256 (64 hex digits) or its uri")
    verify = which.add_parser("verify", help="re-hash weights, manifests, shards and raw videos the record names")
    verify.add_argument("checkpoint", nargs="?", default=None, help="one checkpoint's chain (default: everything)")
    for p in (up, down, verify):
        p.add_argument("--json", action="store_true", help="JSON for programs (hashes in full)")
        p.add_argument("--limit", type=int, default=20, help="text output: rows shown per list")


def main(argv: Sequence[str] | None = None) -> None:
    from svd_dag.rating import cli as rating_cli

    parser = argparse.ArgumentParser(prog="svd-dag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sql = sub.add_parser("sql", help="run read-only SQL over the catalog (CSV out, or --json)")
    sql.add_argument("query")
    sql.add_argument("--json", action="store_true", help="a JSON list of rows instead of CSV")
    sub.add_parser("tables", help="the catalog's tables and their row counts")
    _lineage_parser(sub)
    rating_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "rating":  # before the catalog: the rating page never opens it
        raise SystemExit(rating_cli.run(args))
    from svd_dag.catalog import Catalog
    from svd_dag.settings import load_settings

    settings = load_settings()
    cat = Catalog.from_settings(settings)
    if args.command == "lineage":
        from svd_dag.lineage.registry import needs_mlflow_client

        if "pandas" not in sys.modules and not needs_mlflow_client(settings.mlflow_tracking_uri):
            # A console process of its own: DuckDB imports pandas (~0.5 s) at a query's first
            # parameter only to check its type, and nothing in these commands needs it (a local
            # MLflow store's client does, so it keeps it).
            sys.modules["pandas"] = None  # type: ignore[assignment]
        raise SystemExit(lineage_command(cat, settings, args))
    if args.command == "sql":
        sql_command(cat, args.query, args.json)
    elif args.command == "tables":
        tables_command(cat)


if __name__ == "__main__":
    main()
