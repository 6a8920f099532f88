"""Percentile filtering over the annotation table (SVD section 2.6: annotate once, filter many).

Each criterion removes its worst fraction p of the scored clips: the lowest motion,
aesthetics and caption similarity, the highest text area. With the scored values sorted
worst-first, the cutoff is the (floor(p*n)+1)-th value and a clip is removed when it is
strictly worse than the cutoff: exactly floor(p*n) clips go when values are distinct, and
clips tied at the cutoff all stay. A clip with no score for a criterion (its scoring
failed and is quarantined) is reported as unscored, never counted as a low score.

Criteria and their columns come from the fixed table below; thresholds travel as query
parameters, never formatted into SQL.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class Criterion:
    column: str
    worst: str  # "low": small values are bad; "high": large values are bad


CRITERIA: dict[str, Criterion] = {
    "motion": Criterion("motion_score", "low"),
    "aesthetics": Criterion("aesthetic_score", "low"),
    "caption_similarity": Criterion("caption_similarity", "low"),
    "text": Criterion("text_area", "high"),
}
# The paper's final choices (SPEC 2.6): fraction of clips removed per criterion.
PAPER_REMOVE_FRACTIONS = {"motion": 0.25, "aesthetics": 0.25, "caption_similarity": 0.5, "text": 0.25}


def validate_fractions(fractions: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(fractions) - set(CRITERIA))
    if unknown:
        raise ValueError(f"unknown filter criteria {unknown}; known: {sorted(CRITERIA)}")
    for name, p in fractions.items():
        if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"criterion {name!r}: the fraction removed must be in [0, 1), got {p!r}")
    return {k: float(v) for k, v in fractions.items()}


@dataclass
class FilterResult:
    """Counts and cutoffs. The per-clip outcome stays in DuckDB, as temp tables on the
    connection: `filter_outcome` (clip_id, kept) and `filter_decision_rows` (clip_id,
    criterion, value, cutoff, fraction, decision)."""

    total: int
    kept: int
    cutoffs: dict[str, float | None]
    removed: dict[str, int]
    unscored: dict[str, int]


def percentile_filter(
    con: duckdb.DuckDBPyConnection,
    fractions: dict[str, float],
    absolute_max_text_area: float | None = None,
    source: str = "annotations",
) -> FilterResult:
    """Decide every clip of `source` (a table or view with clip_id and the criteria columns)
    in SQL; Python only sees a few scalars per criterion, whatever the number of clips."""
    fractions = validate_fractions(fractions)
    total = con.execute(f'SELECT count(*) FROM "{source}"').fetchone()[0]
    cutoffs: dict[str, float | None] = {}
    unscored: dict[str, int] = {}
    flags, fails, params = [], [], []
    for name, p in fractions.items():
        crit = CRITERIA[name]
        col, order = crit.column, ("ASC" if crit.worst == "low" else "DESC")
        n = con.execute(f'SELECT count({col}) FROM "{source}"').fetchone()[0]
        unscored[name] = total - n
        k = math.floor(p * n)
        cutoff = con.execute(
            f'SELECT {col} FROM "{source}" WHERE {col} IS NOT NULL ORDER BY {col} {order} LIMIT 1 OFFSET ?', [k],
        ).fetchone()[0] if n and k > 0 else None
        cutoffs[name] = float(cutoff) if cutoff is not None else None
        removed = f"coalesce({col} {'<' if crit.worst == 'low' else '>'} ?, false)"
        params.append(cutoffs[name])
        if name == "text" and absolute_max_text_area is not None:
            removed = f"({removed} OR coalesce({col} > ?, false))"
            params.append(float(absolute_max_text_area))
        flags.append(f'{removed} AS "removed:{name}", ({col} IS NULL) AS "unscored:{name}", '
                     f'{col}::DOUBLE AS "value:{name}"')
        fails.append(f'"removed:{name}" OR "unscored:{name}"')
    con.execute("CREATE OR REPLACE TEMP TABLE filter_flags AS SELECT clip_id" + "".join(", " + f for f in flags)
                + f' FROM "{source}"', params)
    kept = f"NOT ({' OR '.join(fails)})" if fails else "true"
    con.execute(f"CREATE OR REPLACE TEMP TABLE filter_outcome AS SELECT clip_id, {kept} AS kept FROM filter_flags")
    # The long form (clip, criterion) is a view: recording it under a version streams it once.
    con.execute("CREATE OR REPLACE TEMP TABLE filter_criteria (criterion VARCHAR, cutoff DOUBLE, fraction DOUBLE)")
    for name, p in fractions.items():
        con.execute("INSERT INTO filter_criteria VALUES (?, ?, ?)", [name, cutoffs[name], p])

    def pick(prefix: str) -> str:  # the flag column of the row's criterion
        return "CASE c.criterion " + " ".join(f"""WHEN '{n}' THEN f."{prefix}:{n}" """ for n in fractions) + " END"

    con.execute(f"""CREATE OR REPLACE TEMP VIEW filter_decision_rows AS
                    SELECT f.clip_id, c.criterion, {pick("value") if fractions else "NULL::DOUBLE"} AS value, c.cutoff,
                           c.fraction, CASE WHEN {pick("unscored") if fractions else "false"} THEN 'unscored'
                                            WHEN {pick("removed") if fractions else "false"} THEN 'removed'
                                            ELSE 'kept' END AS decision
                    FROM filter_flags f CROSS JOIN filter_criteria c""")
    counts = con.execute("SELECT " + "".join(f'count(*) FILTER (WHERE "removed:{name}"), ' for name in fractions)
                         + "count(*) FILTER (WHERE kept) FROM filter_flags JOIN filter_outcome USING (clip_id)").fetchone()
    return FilterResult(total, int(counts[-1]), cutoffs, {n: int(c) for n, c in zip(fractions, counts)}, unscored)


def eval_held_sql(key_sql: str) -> str:
    """SQL predicate, true when the row's `key_sql` is held out: `split_eval`'s rule in DuckDB.
    Parameters: the seed, then `eval_cut(fraction)`."""
    return f"('0x' || substr(sha256(? || ':' || {key_sql}), 1, 8))::UBIGINT < ?"


def eval_cut(fraction: float) -> int:
    if not 0 <= fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {fraction}")
    return int(fraction * 2**32)


def split_eval(clip_ids: list[str], fraction: float, groups: dict[str, str] | None = None,
               seed: str = "eval") -> tuple[list[str], list[str]]:
    """(train, eval): a clip is held out for evaluation when the hash of its group (its video's
    sha256 when `groups` maps clip -> video, else its own id) falls in the bottom `fraction`,
    so the split is stable across versions (a clip never changes side while it stays in the
    dataset). With groups, every clip of a held-out video is held out: no shot of an eval
    video trains. Without, other clips of the same video may be in training. `seed` salts
    the hash: another seed draws another held-out set, as stable as the first."""
    cut = eval_cut(fraction)
    key = (lambda c: groups[c]) if groups is not None else (lambda c: c)
    held = {c for c in clip_ids if _eval_hash(key(c), seed) < cut}
    return [c for c in clip_ids if c not in held], [c for c in clip_ids if c in held]


def _eval_hash(item_id: str, seed: str = "eval") -> int:
    return int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:8], 16)


def split_eval_at_least_one(ids: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """`split_eval`, but with a positive fraction and 3+ items at least one is held out (the one
    with the smallest hash), so a small set still has something to evaluate on."""
    train, held = split_eval(ids, fraction)
    if fraction > 0 and not held and len(ids) >= 3:
        first = min(ids, key=_eval_hash)
        train, held = [i for i in ids if i != first], [first]
    return train, held
