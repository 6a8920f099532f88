"""Pairwise preference votes as labelling vendors deliver them: parsing, validation, naming.

A vote file is CSV or Parquet with the columns prompt_id, model_a, model_b, winner
(a | b | tie), axis (visual_quality | prompt_following), rater_id, time (ISO 8601, or a
Parquet timestamp, or Unix epoch seconds; a time without zone is taken as UTC) and an
optional pool (the comparison pool, default "main"). `parse_vote_file` keeps the good rows
of a file and rejects each bad one with a reason naming the column, the value, the file and
the row (data rows count from 1, the CSV header not included); a file that cannot be read
as a table at all raises `VoteFileError`.

Votes from automatic judges (rater_id "judge:<name>") are proxies for human preference:
every row carries `rater_kind` ("judge" or "human") so that ratings are never computed
over a silent mix of the two.

Model names: votes may name a checkpoint in several ways (`model_aliases`); each valid row
also carries `model_a_id` / `model_b_id`, the canonical id the name resolves to, so that two
names of one checkpoint are rated as one model and never compared with each other.

`leaderboard_rows` turns ingested votes into one rating row per (pool, axis, rater_kind,
model) with the math of `elo.py`: SVD's Elo and Bradley-Terry with bootstrap intervals.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import posixpath
import re
from collections import defaultdict
from typing import Any, Iterable, Mapping

from svd_dag.evaluation.elo import bradley_terry, elo_ratings
from svd_dag.storage import Store

REQUIRED_COLUMNS = ("prompt_id", "model_a", "model_b", "winner", "axis", "rater_id", "time")
OPTIONAL_COLUMNS = ("pool", "vote_id")
WINNERS = ("a", "b", "tie")
AXES = ("visual_quality", "prompt_following")
DEFAULT_POOL = "main"
JUDGE_PREFIX = "judge:"
# Pools name MLflow metric keys downstream (':' becomes '.' there, `pool_metric_key`): keep
# them to characters MLflow accepts everywhere. ':' separates a study's pools
# ("ablation:motion").
POOL_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]+$")
PARQUET_MAGIC = b"PAR1"
RATING_GROUP = ("pool", "axis", "rater_kind")


class VoteFileError(ValueError):
    """A vote file that cannot be read as a table of votes at all (its rows are not judged)."""


def rater_kind(rater_id: str) -> str:
    """"judge" for automatic judges (rater_id "judge:<name>"), else "human"."""
    return "judge" if str(rater_id).startswith(JUDGE_PREFIX) else "human"


def canonical_model_id(asset: str, variant: str | None, data_version: str | None) -> str:
    """The one id a checkpoint is rated under: `asset[:variant]@data_version`."""
    name = f"{asset}:{variant}" if variant else asset
    return f"{name}@{data_version}" if data_version else name


def model_aliases(checkpoints: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every name a vote may use for a checkpoint -> its canonical id, as of now: the exact
    names of `ModelNames`, and each bare `asset` / `asset:variant` for its newest checkpoint."""
    names = ModelNames(checkpoints)
    return {**names.exact, **{name: versions[-1][1] for name, versions in names.history.items()}}


class ModelNames:
    """The names a vote may use for checkpoints, resolved at the vote's time: `asset@data_version`
    (the canonical id, `asset:variant@data_version` for a variant), `data_version` and
    `asset@data_version` name one checkpoint; a bare `asset` (`asset:variant`) names the one
    that was newest when the vote was cast, the model the rater saw, not the newest at
    ingestion."""

    def __init__(self, checkpoints: Iterable[Mapping[str, Any]] = (), exact: Mapping[str, str] | None = None):
        self.exact: dict[str, str] = dict(exact or {})
        self.history: dict[str, list[tuple[Any, str]]] = defaultdict(list)
        for row in checkpoints:
            asset, variant, version = row["asset"], row.get("variant") or "", row.get("data_version") or ""
            canonical = canonical_model_id(asset, variant, version)
            self.exact[canonical] = canonical
            if version:
                self.exact[version] = canonical
                self.exact[f"{asset}@{version}"] = canonical
            self.history[f"{asset}:{variant}" if variant else asset].append((row.get("created_at"), canonical))
        for versions in self.history.values():
            versions.sort(key=lambda tc: (tc[0] is not None, tc[0] or dt.datetime.min))

    def resolve(self, name: str, when: dt.datetime) -> tuple[str | None, str]:
        """(canonical id, "") or (None, why not)."""
        if name in self.exact:
            return self.exact[name], ""
        if name not in self.history:
            return None, "is not a known model"
        then = [canonical for created, canonical in self.history[name] if created is None or created <= when]
        if then:
            return then[-1], ""
        first = self.history[name][0][0]
        return None, (f"names no checkpoint that existed at {when:%Y-%m-%d %H:%M} UTC (the first {name} is from "
                      f"{first:%Y-%m-%d %H:%M}): name its version, {name}@<data_version>")


def parse_vote_file(name: str, data: bytes, known_models: set[str] | Mapping[str, str] | ModelNames,
                    source: str = "") -> tuple[list[dict], list[dict]]:
    """Split a vote file into (valid_rows, rejected_rows).

    `known_models`: the names a vote may use; a mapping name -> canonical id (see
    `model_aliases`) also resolves aliases. Valid rows hold the cleaned fields plus pool,
    rater_kind, model_a_id, model_b_id, row_number and vote_id (`vote_id_of`, from `source`:
    the file's path under the votes root); rejected rows hold the raw fields, row_number,
    vote_id and `reason`. Raises `VoteFileError` (naming `name`) for an empty file, a file
    that is neither CSV nor Parquet, or one lacking a required column.
    """
    if isinstance(known_models, ModelNames):
        aliases = known_models
    else:
        aliases = ModelNames(exact=dict(known_models) if isinstance(known_models, Mapping)
                             else {m: m for m in known_models})
    valid, rejected = [], []
    for row_number, raw in enumerate(_read_rows(name, data), start=1):
        reason, vote = _check_row(raw, aliases)
        vote_id = vote_id_of(raw, source or name, row_number)
        if reason:
            rejected.append({**_raw_fields(raw), "row_number": row_number, "vote_id": vote_id,
                             "reason": f"{name} row {row_number}: {reason}"})
        else:
            valid.append({**vote, "row_number": row_number, "vote_id": vote_id})
    return valid, rejected


def vote_id_of(raw: Mapping[str, Any], source: str, row_number: int) -> str:
    """The id a vote is counted under, once: the file's own `vote_id` column when it has one
    (the rating page writes it; a vendor re-packaging votes must keep it), else one made from
    the file's path under the votes root and the row, so a file that grows is counted for its
    new rows only and two files with the same bytes count twice."""
    given = _text(raw.get("vote_id"))
    if given:
        return given
    return "row:" + hashlib.sha256(f"{source}#{row_number}".encode()).hexdigest()[:32]


def _read_rows(name: str, data: bytes) -> list[dict[str, Any]]:
    if not data:
        raise VoteFileError(f"{name}: zero bytes, not a vote file")
    lower = name.lower()
    if data[:4] == PARQUET_MAGIC or lower.endswith((".parquet", ".pq")):
        rows, columns = _read_parquet(name, data)
    elif lower.endswith(".csv"):
        rows, columns = _read_csv(name, data)
    else:
        raise VoteFileError(f"{name}: not a CSV (.csv) or Parquet file")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise VoteFileError(f"{name}: missing required column(s) {', '.join(missing)} "
                            f"(found: {', '.join(str(c) for c in columns) or 'none'})")
    return rows


def _read_parquet(name: str, data: bytes) -> tuple[list[dict], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise VoteFileError(f"{name}: not a readable Parquet file ({e})") from e
    return table.to_pylist(), table.column_names


def _read_csv(name: str, data: bytes) -> tuple[list[dict], list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise VoteFileError(f"{name}: not UTF-8 text ({e})") from e
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        reader.fieldnames = [c.strip() for c in reader.fieldnames or []]  # " model_a" is model_a
        rows = list(reader)
    except csv.Error as e:
        raise VoteFileError(f"{name}: not a readable CSV file ({e})") from e
    return rows, reader.fieldnames


def _raw_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {c: None if raw.get(c) is None else str(raw.get(c)) for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _check_row(raw: Mapping[str, Any], names: ModelNames) -> tuple[str | None, dict]:
    """(reason, {}) for a bad row, (None, cleaned vote) for a good one."""
    if raw.get(None):  # csv.DictReader files surplus cells under the key None
        return f"{len(raw[None])} more cell(s) than the header has columns", {}
    fields = {c: _text(raw.get(c)) for c in REQUIRED_COLUMNS}
    for column in REQUIRED_COLUMNS:
        if not fields[column]:
            return f"missing value in column {column}", {}
    winner, axis = fields["winner"].lower(), fields["axis"].lower()
    if winner not in WINNERS:
        return f"winner {fields['winner']!r} is not one of {', '.join(WINNERS)}", {}
    if axis not in AXES:
        return f"axis {fields['axis']!r} is not one of {', '.join(AXES)}", {}
    pool = _text(raw.get("pool")) or DEFAULT_POOL
    if not POOL_PATTERN.match(pool):
        return f"pool {pool!r} may only hold letters, digits, '_', '.', ':' and '-'", {}
    try:
        when = parse_time(raw["time"])
    except ValueError as e:
        return f"time {raw['time']!r} is not ISO 8601 or a timestamp ({e})", {}
    ids = {}
    for column in ("model_a", "model_b"):
        ids[column], why = names.resolve(fields[column], when)
        if ids[column] is None:
            return f"{column} {fields[column]!r} {why}", {}
    if fields["model_a"] == fields["model_b"]:
        return f"model_a and model_b are both {fields['model_a']!r}: a model against itself", {}
    model_a_id, model_b_id = ids["model_a"], ids["model_b"]
    if model_a_id == model_b_id:
        return (f"model_a {fields['model_a']!r} and model_b {fields['model_b']!r} name the same model "
                f"{model_a_id!r}: a model against itself"), {}
    del fields["time"]  # kept as the parsed datetime below
    return None, {**fields, "winner": winner, "axis": axis, "pool": pool, "time": when,
                  "rater_kind": rater_kind(fields["rater_id"]), "model_a_id": model_a_id, "model_b_id": model_b_id}


def parse_time(value: Any) -> dt.datetime:
    """A datetime, ISO 8601 text or Unix epoch seconds -> naive UTC datetime (no zone: UTC)."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        when = _from_epoch(float(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            when = _from_epoch(float(text))
        except ValueError:
            when = dt.datetime.fromisoformat(text)
    else:
        raise ValueError(f"unsupported type {type(value).__name__}")
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def _from_epoch(seconds: float) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError) as e:  # NaN, inf or out of the datetime range
        raise ValueError(f"epoch seconds out of range: {e}") from e


def list_vote_files(store: Store) -> list[str]:
    """Vote file URIs under the store's root, sorted; names starting with "." or "_" (editor
    and upload leftovers, Spark's _SUCCESS, files still being written) and staging names
    ("<name>.tmp-<id>") are not vote files and are left out."""
    if not store.fs.exists(store.root):
        raise FileNotFoundError(f"votes root does not exist: {store.root} (set SVD_DAG_VOTES_URI)")
    return [uri for uri in store.list_files() if not posixpath.basename(uri).startswith((".", "_"))
            and not STAGING_NAME.search(posixpath.basename(uri))]


STAGING_NAME = re.compile(r"\.tmp-[0-9a-f]+$")


def pool_metric_key(pool: str) -> str:
    """A pool as part of an MLflow metric key (no ':', which MLflow refuses on some systems)."""
    return pool.replace(":", ".")


def leaderboard_rows(votes: Iterable[Mapping[str, Any]], rounds: int = 1000, bootstrap: int = 1000,
                     k: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Ratings per (pool, axis, rater_kind) from rows with those keys plus model_a_id,
    model_b_id and winner: one row per model with SVD's Elo (mean and 95% interval over
    `rounds` shuffled orders, factor `k`), Bradley-Terry (bootstrap 95% interval, Arena rank)
    and the model's vote count. Sorted by group, then by Elo, best first."""
    groups: dict[tuple, list] = defaultdict(list)
    for v in votes:
        groups[tuple(v[c] for c in RATING_GROUP)].append((v["model_a_id"], v["model_b_id"], v["winner"]))
    rows = []
    for key in sorted(groups):
        elo = elo_ratings(groups[key], k=k, rounds=rounds, seed=seed)
        bt = bradley_terry(groups[key], bootstrap=bootstrap, seed=seed)
        for model in sorted(elo, key=lambda m: (-elo[m].mean, str(m))):
            rows.append({**dict(zip(RATING_GROUP, key)), "model": model,
                         "elo": elo[model].mean, "elo_low": elo[model].ci_low, "elo_high": elo[model].ci_high,
                         "bt": bt[model].rating, "bt_low": bt[model].ci_low, "bt_high": bt[model].ci_high,
                         "rank": bt[model].rank, "n_votes": elo[model].n_votes})
    return rows
