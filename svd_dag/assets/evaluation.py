"""Evaluation group: pairwise preference votes in, Elo / Bradley-Terry ratings out.

`preference_votes` ingests the vote files labelling vendors drop under the votes root
(SVD_DAG_VOTES_URI, a folder or s3:// prefix), once per file content; `elo_ratings` rates
the checkpoints per (pool, axis, rater_kind) and logs each rating to MLflow on the
checkpoint's logged model. The parsing and the math live in `svd_dag.evaluation`.
"""

import datetime as dt
import hashlib
import posixpath
import json
from collections import Counter

import dagster as dg
import pyarrow as pa
from pydantic import Field

from svd_dag.assets.common import link_metadata, md_table, retry_transient_errors, source_version, uri_metadata
from svd_dag.catalog import Catalog
from svd_dag.evaluation.votes import (REQUIRED_COLUMNS, VoteFileError, canonical_model_id, leaderboard_rows,
                                      ModelNames, list_vote_files, parse_vote_file,
                                      pool_metric_key)
from svd_dag.resources import CatalogResource, MlflowResource, StorageResource

GROUP = "evaluation"
STAGE = "preference_votes"  # the quarantine stage of unreadable vote files

_TEXT = pa.string()
_TIME = pa.timestamp("us")
VOTES_SCHEMA = pa.schema([
    ("prompt_id", _TEXT), ("model_a", _TEXT), ("model_b", _TEXT), ("model_a_id", _TEXT), ("model_b_id", _TEXT),
    ("winner", _TEXT), ("axis", _TEXT), ("pool", _TEXT), ("rater_id", _TEXT), ("rater_kind", _TEXT), ("time", _TIME),
    ("source_file", _TEXT), ("file_sha256", _TEXT), ("row_number", pa.int64()), ("ingested_at", _TIME),
    ("vote_id", _TEXT),
])
REJECTED_SCHEMA = pa.schema([*((c, _TEXT) for c in (*REQUIRED_COLUMNS, "pool")), ("reason", _TEXT),
                             ("source_file", _TEXT), ("file_sha256", _TEXT), ("row_number", pa.int64()),
                             ("rejected_at", _TIME), ("vote_id", _TEXT)])
VOTE_FILES_SCHEMA = pa.schema([("sha256", _TEXT), ("uri", _TEXT), ("bytes", pa.int64()), ("votes", pa.int64()),
                               ("rejected", pa.int64()), ("ingested_at", _TIME)])
RATINGS_SCHEMA = pa.schema([
    ("pool", _TEXT), ("axis", _TEXT), ("rater_kind", _TEXT), ("model", _TEXT),
    ("elo", pa.float64()), ("elo_low", pa.float64()), ("elo_high", pa.float64()),
    ("bt", pa.float64()), ("bt_low", pa.float64()), ("bt_high", pa.float64()), ("rank", pa.int64()),
    ("n_votes", pa.int64()), ("mlflow_model_id", _TEXT), ("votes_version", _TEXT), ("computed_at", _TIME),
])


@dg.asset(group_name=GROUP, code_version=source_version("evaluation/votes.py"), kinds={"duckdb"})
@retry_transient_errors
def preference_votes(context: dg.AssetExecutionContext, votes_storage: StorageResource,
                     catalog: CatalogResource) -> dg.MaterializeResult:
    """Pairwise preference votes (prompt, model_a, model_b, winner, axis, rater, time, pool),
    from the CSV / Parquet files under the votes root, each counted once by its vote id (the
    file's `vote_id` column, as the rating page writes it, else one made from the file's path
    and row): a re-run adds nothing, a file that grew adds its new rows, a re-packaged file
    with vote ids adds nothing, and two files with identical bytes are two votes. A file is
    read again only when its bytes change. Bad rows go to `rejected_votes` with their reason;
    an unreadable file is quarantined (stage `preference_votes`) and read again on the next
    run, so a fixed file re-added is ingested.

    Model names a vote may use, from the catalog's `checkpoints` table: `asset` (or
    `asset:variant`) for the checkpoint of that asset that was newest when the vote was cast
    (the one the rater saw), `data_version`, or `asset@data_version` for an exact one. Each vote is stored with the canonical id
    `asset[:variant]@data_version` of both models (`model_a_id`, `model_b_id`). A vote naming
    any other model is rejected for good (its file counts as ingested): deliver it again in a
    new file once the checkpoint exists.
    """
    store, cat = votes_storage.store(), catalog.catalog()
    tables = cat.tables()
    checkpoints = cat.rows("SELECT asset, variant, data_version, created_at FROM checkpoints") \
        if "checkpoints" in tables else []
    names = ModelNames(checkpoints)
    ingested = {(r["uri"], r["sha256"]) for r in cat.rows("SELECT uri, sha256 FROM vote_files")} \
        if "vote_files" in tables else set()
    now = _now()
    files = list_vote_files(store)
    valid, rejected, new_files, broken, skipped = [], [], [], [], 0
    for uri in files:
        data = store.read_bytes(uri)
        sha = hashlib.sha256(data).hexdigest()
        if (uri, sha) in ingested:
            skipped += 1
            continue
        try:
            good, bad = parse_vote_file(uri, data, names, source=posixpath.relpath(uri, store.root))
        except VoteFileError as e:
            broken.append({"uri": uri, "sha256": sha, "stage": STAGE, "reason": str(e)})
            context.log.warning(str(e))
            continue
        source = {"source_file": uri, "file_sha256": sha}
        valid += [{**v, **source, "ingested_at": now} for v in good]
        rejected += [{**r, **source, "rejected_at": now} for r in bad]
        new_files.append({"sha256": sha, "uri": uri, "bytes": len(data), "votes": len(good), "rejected": len(bad),
                          "ingested_at": now})
    counted = {v["vote_id"] for v in valid}
    rejected = [r for r in rejected if r["vote_id"] not in counted]  # a later file fixed the row
    known = _known_vote_ids(cat, sorted(counted))
    cat.upsert("preference_votes", pa.Table.from_pylist(_once(valid), schema=VOTES_SCHEMA), key=["vote_id"])
    cat.upsert("rejected_votes", pa.Table.from_pylist(_once(rejected), schema=REJECTED_SCHEMA), key=["vote_id"])
    cat.upsert("vote_files", pa.Table.from_pylist(new_files, schema=VOTE_FILES_SCHEMA), key=["uri", "sha256"])
    if broken:
        cat.quarantine(broken)
    cat.release_from_quarantine(STAGE, [f["uri"] for f in new_files])

    total = cat.rows("SELECT count(*) AS n FROM preference_votes")[0]["n"]
    added = Counter(f"{v['axis']}/{v['rater_kind']}" for v in _once(valid) if v["vote_id"] not in known)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(votes_version(cat)),
        metadata={"dagster/row_count": total, "votes_uri": uri_metadata(store.root), "files_seen": len(files),
                  "files_new": len(new_files), "files_skipped": skipped, "files_broken": len(broken),
                  "votes_added": len(counted - known), "votes_already_counted": len(counted & known),
                  "votes_rejected": len(rejected),
                  "added_by_axis_and_rater_kind": dg.MetadataValue.json(dict(sorted(added.items()))),
                  "broken_files": md_table([{"file": b["uri"], "reason": b["reason"]} for b in broken]),
                  "rejected_examples": md_table([{"reason": r["reason"]} for r in rejected[:20]])},
    )


class EloConfig(dg.Config):
    rounds: int = Field(default=1000, description="shuffled vote orders averaged by SVD's Elo")
    k: float = Field(default=1.0, description="Elo update factor (SVD: 1)")
    bootstrap: int = Field(default=1000, description="bootstrap resamples for the Bradley-Terry intervals")
    seed: int = 0
    exclude_raters: list[str] = Field(default_factory=list, description="rater ids whose votes are left out (e.g. "
                                      "raters the rating page's admin page shows failing its gold pairs)")


@dg.asset(group_name=GROUP, deps=[preference_votes], kinds={"duckdb", "mlflow"},
          code_version=source_version("evaluation/elo.py", "evaluation/votes.py"))
@retry_transient_errors
def elo_ratings(context: dg.AssetExecutionContext, config: EloConfig, votes_storage: StorageResource,
                catalog: CatalogResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Ratings of the checkpoints from all preference votes, per (pool, axis, rater_kind):
    SVD's Elo (K=1, start 1000, scale 400, mean and 95% interval over 1000 shuffled orders)
    and Bradley-Terry with bootstrap 95% intervals and Arena-style ranks. Judge votes are
    rated apart from human ones and their MLflow metrics carry a `proxy_` prefix.

    One MLflow run per materialization holds the table (elo_ratings.json); each model's
    `[proxy_]elo_<axis>[_low|_high]` (pool other than "main": `[proxy_]elo_<pool>_<axis>...`)
    is logged on that checkpoint's logged model, with the votes as its dataset. In the run
    itself such a key holds one value per model, at step = the model's place in the leaderboard.
    Votes of the raters in `exclude_raters` are left out (their files stay under the votes root).
    """
    cat = catalog.catalog()
    votes = cat.rows("SELECT pool, axis, rater_kind, model_a_id, model_b_id, winner FROM preference_votes "
                     "WHERE rater_id NOT IN (SELECT unnest(?::VARCHAR[])) ORDER BY file_sha256, row_number",
                     [config.exclude_raters]) if "preference_votes" in cat.tables() else []
    version = votes_version(cat)
    rows = leaderboard_rows(votes, rounds=config.rounds, bootstrap=config.bootstrap, k=config.k, seed=config.seed)
    checkpoints = {canonical_model_id(c["asset"], c["variant"], c["data_version"]): c
                   for c in cat.rows("SELECT * FROM checkpoints")} if "checkpoints" in cat.tables() else {}
    now = _now()
    for r in rows:
        r.update(mlflow_model_id=(checkpoints.get(r["model"]) or {}).get("mlflow_model_id"),
                 votes_version=version, computed_at=now)
    cat.replace_table("elo_ratings", pa.Table.from_pylist(rows, schema=RATINGS_SCHEMA))

    tracker = mlflow.tracker()
    run_id = tracker.start_run(
        run_name=f"elo_ratings-{version[:8]}",
        params={"rounds": config.rounds, "k": config.k, "bootstrap": config.bootstrap, "seed": config.seed,
                "votes_version": version, "votes": len(votes)},
        tags={"dagster.run_id": context.run.run_id, "dagster.asset": "elo_ratings"})
    with tracker.failing_run(run_id):
        tracker.log_dataset(run_id, votes_storage.store().root, version, "preference_votes", context="evaluation")
        client = tracker.client()
        client.log_dict(run_id, [{**r, "computed_at": r["computed_at"].isoformat()} for r in rows], "elo_ratings.json")
        linked = _log_model_metrics(client, run_id, rows, version)
        tracker.finish(run_id, {"votes": len(votes), "models_linked": len(linked)})

    leaderboards = {}
    for r in rows:
        leaderboards.setdefault(f"leaderboard_{r['pool']}_{r['axis']}_{r['rater_kind']}", []).append(
            {"rank": r["rank"], "model": r["model"], "elo": f"{r['elo']:.2f} [{r['elo_low']:.2f}, {r['elo_high']:.2f}]",
             "bradley_terry": f"{r['bt']:.1f} [{r['bt_low']:.1f}, {r['bt_high']:.1f}]", "votes": r["n_votes"]})
    unlinked = sorted({r["model"] for r in rows} - linked)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(json.dumps([version, config.model_dump()]).encode()).hexdigest()[:16]),
        metadata={"dagster/row_count": len(rows), "votes": len(votes), "votes_version": version,
                  "raters_excluded": ", ".join(config.exclude_raters) or "-",
                  "mlflow_run": link_metadata(tracker.run_link(run_id)), "models_not_in_checkpoints": ", ".join(unlinked) or "-",
                  **{name: md_table(board) for name, board in sorted(leaderboards.items())}},
    )


def _log_model_metrics(client, run_id: str, rows: list[dict], version: str) -> set[str]:
    """Log each rating on its checkpoint's MLflow logged model; returns the models linked."""
    linked, place = set(), Counter()
    for r in rows:
        group = (r["pool"], r["axis"], r["rater_kind"])
        step = place[group]
        place[group] += 1
        if not r["mlflow_model_id"]:
            continue
        prefix = ("proxy_" if r["rater_kind"] == "judge" else "") + "elo_" + \
            ("" if r["pool"] == "main" else f"{pool_metric_key(r['pool'])}_") + r["axis"]
        for suffix, value in (("", r["elo"]), ("_low", r["elo_low"]), ("_high", r["elo_high"])):
            client.log_metric(run_id, prefix + suffix, value, step=step, model_id=r["mlflow_model_id"],
                              dataset_name="preference_votes", dataset_digest=version)
        linked.add(r["model"])
    return linked


def _known_vote_ids(cat: Catalog, ids: list[str]) -> set[str]:
    """Which of `ids` the catalog already counts (read before this run's upsert)."""
    if not ids or "preference_votes" not in cat.tables():
        return set()
    if "vote_id" not in {r["column_name"] for r in cat.rows("SELECT column_name FROM (DESCRIBE preference_votes)")}:
        return set()
    return {r["vote_id"] for r in cat.rows("SELECT vote_id FROM preference_votes WHERE vote_id IN (SELECT unnest(?))",
                                           [ids])}


def _once(rows: list[dict]) -> list[dict]:
    """One row per vote id (the last one read), as the catalog keeps them."""
    return list({r["vote_id"]: r for r in rows}.values())


def votes_version(cat: Catalog) -> str:
    """Content version of the ingested votes: a hash of their ids and outcomes."""
    if "preference_votes" not in cat.tables():
        return hashlib.sha256(b"").hexdigest()[:16]
    digest = cat.scalar("SELECT sha256(coalesce(string_agg(coalesce(vote_id, file_sha256 || '#' || row_number) "
                        "|| ':' || winner, chr(10) ORDER BY coalesce(vote_id, file_sha256 || '#' || row_number)), '')) "
                        "FROM preference_votes")
    return digest[:16]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


evaluation_assets = [preference_votes, elo_ratings]
