"""The admin page's numbers, from decision records, and the export of every answer.

Per rater: decisions, agreement with gold pairs (the visual quality answer on a gold pair
names the side `gold.better` says; a tie disagrees: the degraded copy is meant to be
clearly worse), the left-choice rate (of the answers that chose a side, on every axis, the
share that chose the video shown on the left: far from 0.5 over many votes means a rater
who does not look), and the time per decision (seconds from both videos ended to the vote).
Per model (non-gold pairs only): the decisions it was in and its wins, ties and losses
per axis.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter, defaultdict
from typing import Iterable

from svd_dag.evaluation.votes import AXES
from svd_dag.rating.records import Decision

GOLD_AXIS = "visual_quality"
EXPORT_COLUMNS = ("vote_id", "decision_id", "rater_id", "pair_id", "pool", "prompt_id", "model_a", "model_b",
                  "axis", "winner", "shown_left", "chose_left", "gold_better", "seconds", "time",
                  "task_list_version", "vote_file")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _chose_left(decision: Decision, answer: str) -> bool | None:
    return None if answer == "tie" else answer == decision.left


def rater_stats(decisions: Iterable[Decision]) -> list[dict]:
    """One row per rater, by id: decisions, gold, gold_agree, gold_agreement, left_rate,
    tie_rate, median_s, p90_s, last_time."""
    by_rater: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        by_rater[d.rater_id].append(d)
    rows = []
    for rater_id in sorted(by_rater):
        mine = by_rater[rater_id]
        gold = [d for d in mine if d.is_gold and GOLD_AXIS in d.answers]
        agree = sum(1 for d in gold if d.answers[GOLD_AXIS] == d.gold_better)
        sides = [_chose_left(d, a) for d in mine for a in d.answers.values()]
        chose = [s for s in sides if s is not None]
        seconds = sorted(d.seconds for d in mine if d.seconds is not None)
        rows.append({
            "rater_id": rater_id, "decisions": len(mine), "gold": len(gold), "gold_agree": agree,
            "gold_agreement": _share(agree, len(gold)), "left_rate": _share(sum(chose), len(chose)),
            "tie_rate": _share(len(sides) - len(chose), len(sides)),
            "median_s": statistics.median(seconds) if seconds else None,
            "p90_s": seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))] if seconds else None,
            "last_time": max(d.time for d in mine),
        })
    return rows


def model_stats(decisions: Iterable[Decision]) -> list[dict]:
    """One row per (pool, model) of the non-gold decisions: decisions, and per axis
    <axis>_wins / <axis>_ties / <axis>_losses. Sorted by pool, then most decisions first."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for d in decisions:
        if d.is_gold:
            continue
        for side, model in (("a", d.model_a), ("b", d.model_b)):
            c = counts[(d.pool, model)]
            c["decisions"] += 1
            for axis, winner in d.answers.items():
                c[f"{axis}_{'ties' if winner == 'tie' else 'wins' if winner == side else 'losses'}"] += 1
    rows = []
    for (pool, model), c in counts.items():
        row = {"pool": pool, "model": model, "decisions": c["decisions"]}
        for axis in AXES:
            row.update({f"{axis}_{k}": c[f"{axis}_{k}"] for k in ("wins", "ties", "losses")})
        rows.append(row)
    return sorted(rows, key=lambda r: (r["pool"], -r["decisions"], r["model"]))


def summary(decisions: list[Decision], pairs: int) -> dict:
    """Totals: decisions, gold decisions, vote rows written, raters, pairs in the task list."""
    return {"decisions": len(decisions), "gold": sum(1 for d in decisions if d.is_gold),
            "votes": sum(len(d.answers) for d in decisions if not d.is_gold),
            "raters": len({d.rater_id for d in decisions}), "pairs": pairs}


def export_rows(decisions: Iterable[Decision]) -> list[dict]:
    """Every answer, one row per (decision, axis), gold pairs included (`gold_better` set,
    `vote_id` empty: gold answers are not votes). `winner` is in the task's a/b terms."""
    rows = []
    for d in decisions:
        ids = {} if d.is_gold else d.vote_ids()
        for axis in AXES:
            if axis not in d.answers:
                continue
            chose = _chose_left(d, d.answers[axis])
            rows.append({"vote_id": ids.get(axis, ""), "decision_id": d.decision_id, "rater_id": d.rater_id,
                         "pair_id": d.pair_id, "pool": d.pool, "prompt_id": d.prompt_id, "model_a": d.model_a,
                         "model_b": d.model_b, "axis": axis, "winner": d.answers[axis], "shown_left": d.left,
                         "chose_left": "" if chose is None else str(chose).lower(),
                         "gold_better": d.gold_better or "", "seconds": "" if d.seconds is None else d.seconds,
                         "time": d.time, "task_list_version": d.task_list_version, "vote_file": d.vote_file or ""})
    return rows


def export_csv(decisions: Iterable[Decision]) -> str:
    """`export_rows` as CSV text with a header."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(export_rows(decisions))
    return out.getvalue()
