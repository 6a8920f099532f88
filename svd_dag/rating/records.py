"""A rater's decision on a pair, written once: a decision record and, unless gold, a vote file.

Decision record: `decisions/<id[:2]>/<decision_id>.json` in the rating state folder, with
everything the admin page needs (rater, pair, models, which side was shown on the left,
the answer per axis in the task's a/b terms, the seconds from both videos ended to the
vote, the time). Every decision has one, gold pairs included.

Vote file: `rating/<id[:2]>/<decision_id>.csv` under the votes root, for a pair that is not
a gold pair, in the vendor format `preference_votes` ingests: one row per axis answered,
`winner` in the task's a/b terms (never the displayed left/right), `vote_id`
"<decision_id>.<axis>". Gold answers are never vote files: their "models" are a video and
its degraded copy, not checkpoints.

Both are created with `Store.create_bytes` (staged, fsynced, linked into place; a
conditional PUT on S3), so a decision retried any number of times, even concurrently, is
stored once: the first writer of the decision's primary file (the vote file, or for a
gold pair the record) wins and every other attempt is told it is a duplicate.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from svd_dag.evaluation.votes import AXES, STAGING_NAME, WINNERS
from svd_dag.rating.raters import check_rater_id
from svd_dag.storage import Store

DECISION_ID = re.compile(r"^[0-9a-f]{32}$")
VOTES_FOLDER = "rating"  # under the votes root
DECISIONS_FOLDER = "decisions"  # under the rating state folder
VOTE_COLUMNS = ("prompt_id", "model_a", "model_b", "winner", "axis", "rater_id", "time", "pool", "vote_id")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """One rater's answers on one pair. `answers` maps axis -> "a" | "b" | "tie" (the task's
    sides); `left` is the side that was shown on the left; `seconds` runs from the moment both
    videos had ended to the vote (None when the page could not tell); `time` is ISO UTC."""
    decision_id: str
    rater_id: str
    pair_id: str
    pool: str
    prompt_id: str
    model_a: str
    model_b: str
    gold_better: str | None
    left: str
    answers: dict[str, str]
    seconds: float | None
    time: str
    task_list_version: str
    vote_file: str | None = field(default=None, compare=False)  # where the votes went (None: gold)

    @property
    def is_gold(self) -> bool:
        return self.gold_better is not None

    def check(self) -> Decision:
        """Self, or a ValueError saying which field is wrong (a server bug, not a rater's)."""
        if not DECISION_ID.match(self.decision_id):
            raise ValueError(f"decision_id {self.decision_id!r} is not 32 lowercase hex digits")
        check_rater_id(self.rater_id)
        if self.left not in ("a", "b") or self.gold_better not in (None, "a", "b"):
            raise ValueError(f"left {self.left!r} / gold_better {self.gold_better!r} must name side a or b")
        if not self.answers or any(axis not in AXES or w not in WINNERS for axis, w in self.answers.items()):
            raise ValueError(f"answers {self.answers!r} must map axes of {AXES} to one of {WINNERS}")
        return self

    def vote_ids(self) -> dict[str, str]:
        """axis -> the vote id its row carries."""
        return {axis: f"{self.decision_id}.{axis}" for axis in self.answers}

    def vote_csv(self) -> bytes:
        """The vote file: one row per axis answered, in the columns `parse_vote_file` reads."""
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(VOTE_COLUMNS)
        ids = self.vote_ids()
        for axis in AXES:
            if axis in self.answers:
                writer.writerow([self.prompt_id, self.model_a, self.model_b, self.answers[axis], axis,
                                 self.rater_id, self.time, self.pool, ids[axis]])
        return out.getvalue().encode()

    def record_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def vote_file_path(decision_id: str) -> str:
    """The vote file's path under the votes root (two hex digits of fan-out per folder level)."""
    return posixpath.join(VOTES_FOLDER, decision_id[:2], f"{decision_id}.csv")


def decision_path(decision_id: str) -> str:
    """The decision record's path under the rating state folder."""
    return posixpath.join(DECISIONS_FOLDER, decision_id[:2], f"{decision_id}.json")


def write_decision(decision: Decision, votes: Store, state: Store) -> tuple[bool, Decision]:
    """Store `decision` once: (True, the record written) when this call stored it, (False, the
    decision as given) when the decision id was stored before (a retried request).

    The vote file (for a gold pair: the record) decides which call wins. A loser still
    creates the record if it is missing, so a writer that died between the two files is
    completed by the retry instead of leaving votes without their record."""
    decision.check()
    if decision.is_gold:
        return state.create_bytes(decision_path(decision.decision_id), decision.record_json()), decision
    rel = vote_file_path(decision.decision_id)
    record = Decision(**{**asdict(decision), "vote_file": votes.uri(rel)})
    created = votes.create_bytes(rel, decision.vote_csv())
    state.create_bytes(decision_path(decision.decision_id), record.record_json())
    return created, record


def decision_from_json(doc: Mapping[str, Any]) -> Decision:
    """A Decision from its record (`record_json`); ValueError / KeyError / TypeError if it is not one."""
    fields = {k: doc[k] for k in Decision.__dataclass_fields__ if k != "vote_file"}
    return Decision(**fields, vote_file=doc.get("vote_file")).check()


def read_decisions(state: Store) -> list[Decision]:
    """Every decision record in the rating state folder, oldest first; a file that is not a
    record is logged with its path and the reason, and skipped."""
    folder = state.uri(DECISIONS_FOLDER)
    if not state.fs.exists(folder):
        return []
    paths = [p for p in state.fs.find(folder) if p.endswith(".json")
             and not posixpath.basename(p).startswith((".", "_")) and not STAGING_NAME.search(p)]
    decisions = []
    for path, data in (state.fs.cat(paths).items() if paths else ()):
        try:
            decisions.append(decision_from_json(json.loads(data)))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s is not a decision record, skipped: %s", path, e)
    return sorted(decisions, key=lambda d: (d.time, d.decision_id))
