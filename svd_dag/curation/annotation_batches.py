"""Annotators over the catalog in batches: each batch is scored and committed on its own.

The clips an annotator still has to score (no row under its current model version) are
selected in SQL and spooled to a local worklist; Python reads it a batch at a time, scores
the batch, and commits its rows and failures before the next batch starts. A run killed at
any point keeps every committed batch, the next run does only what is missing, and the
upsert key (clip_id, model_version) means a re-run never duplicates a row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import pyarrow as pa

from svd_dag.catalog import Catalog, quarantine_on, release_on, upsert_on
from svd_dag.curation.annotate import clip_ref
from svd_dag.curation.datasets import json_digest, now, relation_digest

DEFAULT_BATCH_CLIPS = 256
Log = Callable[[str], None]


def samples_label(cat: Catalog) -> str:
    """The sample settings label of the current clips (all come from one scan of `clips`)."""
    if "clips" not in cat.tables():
        return "none"
    if "samples" not in cat.query("SELECT * FROM clips LIMIT 0").schema.names:
        return "unrecorded"  # clips scanned before the label existed: rescanned on the next clips run
    labels = [r["s"] for r in cat.rows("SELECT DISTINCT coalesce(samples, 'unrecorded') AS s FROM clips ORDER BY s")]
    if len(labels) > 1:
        raise RuntimeError(f"clips come from {len(labels)} sample settings ({', '.join(labels)}): materialize clips first")
    return labels[0] if labels else "none"


def on_current_samples(cat: Catalog, model_version: str) -> str:
    """A frame annotator's version on the clips' current samples: `<model>@samples=<label>`.

    Scores depend on the frames they were computed on as much as on the model, so a change
    of the sampling settings (fps, width, JPEG quality) recomputes them; a change of the cut
    cascade alone keeps the scores of every clip whose frame range did not move.
    """
    return f"{model_version}@samples={samples_label(cat)}"


class Progress:
    """done / total, rate and time left, logged at most every `every_s` seconds (and at the end)."""

    def __init__(self, what: str, total: int, log: Log, every_s: float = 10.0):
        self.what, self.total, self.log, self.every_s = what, total, log, every_s
        self.done, self.start, self.last = 0, time.monotonic(), 0.0

    def advance(self, n: int) -> None:
        self.done += n
        t = time.monotonic()
        if t - self.last >= self.every_s or self.done >= self.total:
            self.last = t
            rate = self.done / max(t - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log(f"{self.what}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.1f}%), "
                     f"{rate:.2f}/s, ~{left:.0f} s left")


@dataclass
class BatchRun:
    """What an annotator did this run (the rows themselves are in the catalog)."""

    total: int = 0  # clips in the catalog
    scored: int = 0
    failed: int = 0
    batches: int = 0
    nodes: list[str] = field(default_factory=list)  # the Ray nodes that scored its batches (none: here)


def pending_sql(table: str, tables: set[str], select: str = "c.*", source: str = "clips c",
                order: str = "c.samples_uri, c.clip_id") -> str:
    """Rows of `source` (clips `c`) that `table` has no row for under the version `$version`.

    Without `table` yet, every row is pending (the parameter is still consumed)."""
    if table in tables:
        anti = f'ANTI JOIN "{table}" t ON t.clip_id = c.clip_id AND t.model_version = $version'
    else:
        anti = "WHERE $version IS NOT NULL"
    return f"SELECT {select} FROM {source} {anti} ORDER BY {order}"


def iter_batches(cat: Catalog, sql: str, params: dict, batch_rows: int) -> Iterator[tuple[int, Iterator[list[dict]]]]:
    """(number of rows, an iterator of batches as lists of dicts) of `sql`, spooled to a worklist."""
    with cat.worklist(sql, params) as work:
        n = work.metadata.num_rows

        def batches() -> Iterator[list[dict]]:
            for rb in work.iter_batches(batch_size=max(1, batch_rows)):
                yield pa.Table.from_batches([rb]).to_pylist()

        yield n, batches()


def commit_batch(cat: Catalog, table: str, rows: list[dict], failures: list[dict],
                 clips_by_id: dict[str, dict]) -> None:
    """One batch's rows, its quarantine records and the releases of clips that now scored, in
    one transaction."""
    scored = [clip_ref(clips_by_id[r["clip_id"]]) for r in rows if r["clip_id"] in clips_by_id]

    def commit(con):
        if rows:
            upsert_on(con, table, pa.Table.from_pylist(rows), key=["clip_id", "model_version"])
        quarantine_on(con, [{"uri": f["uri"], "stage": table, "reason": f["reason"]} for f in failures])
        release_on(con, table, scored)

    cat.write(commit)


ScoreStream = Callable[[Iterator[list[dict]]], Iterator[tuple[list[dict], list[dict], list[dict]]]]


def run_batches(cat: Catalog, table: str, version: str, batch_rows: int, log: Log,
                score_batch: Optional[Callable[[list[dict]], tuple[list[dict], list[dict]]]] = None,
                sql: Optional[str] = None, extra_params: Optional[dict] = None,
                score_stream: Optional[ScoreStream] = None) -> BatchRun:
    """Score every pending clip in batches of `batch_rows`, committing after each batch.

    Either `score_batch(clips) -> (rows, failures)`, one batch at a time here, or
    `score_stream(batches) -> (batch, rows, failures)` as batches finish (a pool of workers
    with several batches in flight); `sql` selects the pending work (default: clips without a
    row under `version`), with `$version` bound."""
    run = BatchRun(total=int(cat.scalar("SELECT count(*) FROM clips") or 0) if "clips" in cat.tables() else 0)
    sql = sql or pending_sql(table, cat.tables())
    stream = score_stream or (lambda batches: ((b, *score_batch(b)) for b in batches))
    for n, batches in iter_batches(cat, sql, {"version": version, **(extra_params or {})}, batch_rows):
        progress = Progress(table, n, log)
        for batch, rows, failures in stream(batches):
            commit_batch(cat, table, rows, failures, {c["clip_id"]: c for c in batch if "video_uri" in c})
            run.scored += len(rows)
            run.failed += len(failures)
            run.batches += 1
            for f in failures:
                log(f"quarantined: {f['reason']}")
            progress.advance(len(batch))
    return run


def record_version(cat: Catalog, annotator: str, model_version: str, weights: str, table: str,
                   code_version: str | None = None, placement: str | None = None, weights_sha256: str = "") -> None:
    """The annotator's current version (one row per annotator: model version, weights, the
    asset's code version, where its rows were scored), and every version it ever had
    (`annotator_version_history`: a row per version, written when first seen, never rewritten)."""
    row = {"annotator": annotator, "table_name": table, "model_version": model_version, "weights": weights,
           "code_version": code_version, "placement": placement, "weights_sha256": weights_sha256 or None,
           "updated_at": now()}
    cat.upsert("annotator_versions", pa.Table.from_pylist([row]), key=["annotator"])
    seen = "annotator_version_history" in cat.tables() and cat.scalar(
        "SELECT count(*) FROM annotator_version_history WHERE annotator = ? AND model_version = ? "
        "AND code_version IS NOT DISTINCT FROM ? AND placement IS NOT DISTINCT FROM ?",
        [annotator, model_version, code_version, placement])
    if not seen:
        cat.upsert("annotator_version_history", pa.Table.from_pylist([{**row, "first_seen": row["updated_at"]}]),
                   key=["annotator", "model_version", "code_version", "placement"])


def table_version(cat: Catalog, table: str, model_version: str) -> tuple[str, int]:
    """(content digest, rows) of `table`'s rows under `model_version`: the asset's data version."""
    if table not in cat.tables():
        return json_digest([model_version, "empty"]), 0
    with cat.connect() as con:
        digest, n = relation_digest(con, f'SELECT * EXCLUDE (annotated_at) FROM "{table}" WHERE model_version = ?',
                                    [model_version])
    return json_digest([model_version, digest]), n
