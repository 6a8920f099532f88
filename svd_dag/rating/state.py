"""What the rating server knows: the task list, each rater's order and layout, who decided what.

Per rater, the pairs come in an order of their own and each pair shows side a on the left
or on the right, both fixed by a hash of (rater, pair): a reload shows the same next pair
the same way round, and no two raters share an order or a layout. A rater decides a pair
once; progress is the share of the current task list's pairs they have decided (a pair_id
decided under an earlier task list counts, so a task list that changes a pair must give it a
new id). The task list may change while the page runs (`follow.TaskSource`).

The files are the truth (`records.write_decision` creates each once, whatever the number of
retries or servers); the memory here is rebuilt from the decision records at start and only
answers retries and progress quickly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping

from svd_dag.rating.follow import TaskSource
from svd_dag.rating.records import Decision, read_decisions, write_decision
from svd_dag.rating.tasks import Pair, TaskList
from svd_dag.storage import Store

SHOWN = ("left", "right", "tie")


@dataclass(frozen=True)
class Outcome:
    """What became of a vote: "stored", "duplicate" (this decision id was stored before: a
    retry), "already_decided" (the rater decided this pair under another decision id) or
    "conflict" (the decision id was used for another pair or rater: nothing is revealed).
    `decision` is the stored one, `pair` the pair it is about."""
    status: str
    decision: Decision
    pair: Pair


def _hash(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


class RatingState:
    """The task lists and every decision made on them, in memory, and the one way to add one."""

    def __init__(self, tasks: TaskList | TaskSource, votes: Store, state: Store):
        self.source = tasks if isinstance(tasks, TaskSource) else TaskSource(tasks)
        self.votes, self.state = votes, state
        self._lock = threading.Lock()
        self._by_id: dict[str, Decision] = {}
        self._done: dict[str, dict[str, Decision]] = defaultdict(dict)  # rater -> pair_id -> decision
        self._pending: dict[tuple[str, str], str] = {}  # (rater, pair) -> decision id being written
        for decision in read_decisions(state):
            self._index(decision)
        self._orders: dict[tuple[str, str], tuple[Pair, ...]] = {}  # (list version, rater) -> order

    @property
    def tasks(self) -> TaskList:
        """The task list new pairs come from."""
        return self.source.current

    def _index(self, decision: Decision) -> None:
        self._by_id.setdefault(decision.decision_id, decision)
        self._done[decision.rater_id].setdefault(decision.pair_id, decision)

    def decisions(self) -> list[Decision]:
        """Every decision, oldest first (a copy: the admin page reads it while votes arrive)."""
        with self._lock:
            found = list(self._by_id.values())
        return sorted(found, key=lambda d: (d.time, d.decision_id))

    def left_side(self, rater_id: str, pair_id: str) -> str:
        """The side ("a" or "b") this rater sees on the left for this pair."""
        return "a" if _hash("left", rater_id, pair_id)[0] & 1 == 0 else "b"

    def _order(self, rater_id: str, tasks: TaskList) -> tuple[Pair, ...]:
        key = (tasks.version, rater_id)
        order = self._orders.get(key)
        if order is None:
            order = tuple(sorted(tasks.pairs, key=lambda p: _hash("order", rater_id, p.pair_id)))
            if len(self._orders) >= 4096:
                self._orders.clear()
            self._orders[key] = order
        return order

    def progress(self, rater_id: str) -> dict[str, int]:
        """{"done": pairs of the current task list the rater decided, "total": pairs in it}."""
        tasks = self.tasks
        with self._lock:
            decided = list(self._done.get(rater_id, ()))
        return {"done": sum(1 for pair_id in decided if tasks.pair(pair_id) is not None), "total": len(tasks.pairs)}

    def next_pair(self, rater_id: str) -> Pair | None:
        """The first pair in the rater's order that they have not decided, or None: all done."""
        tasks = self.tasks
        with self._lock:
            done = set(self._done.get(rater_id, ()))
        return next((p for p in self._order(rater_id, tasks) if p.pair_id not in done), None)

    def reveal(self, rater_id: str, pair: Pair) -> dict[str, str]:
        """The model names behind the videos as shown, {"left": ..., "right": ...}: told after the vote."""
        left = self.left_side(rater_id, pair.pair_id)
        return {"left": pair.side(left).model, "right": pair.side("b" if left == "a" else "a").model}

    def decide(self, rater_id: str, pair: Pair, decision_id: str, shown: Mapping[str, str],
               seconds: float | None, tasks: TaskList | None = None) -> Outcome:
        """Store a rater's answers on `pair` (of `tasks`, default the current list). `shown` maps
        axis -> "left" | "right" | "tie" as the rater saw the videos; they are stored in the
        task's a/b terms."""
        key = (rater_id, pair.pair_id)
        with self._lock:
            known = self._by_id.get(decision_id)
            if known is not None:
                same = known.rater_id == rater_id and known.pair_id == pair.pair_id
                return Outcome("duplicate" if same else "conflict", known, pair)
            prior = self._done.get(rater_id, {}).get(pair.pair_id)
            if prior is not None:
                return Outcome("already_decided", prior, pair)
            pending = self._pending.setdefault(key, decision_id)
        left = self.left_side(rater_id, pair.pair_id)
        right = "b" if left == "a" else "a"
        decision = Decision(
            decision_id=decision_id, rater_id=rater_id, pair_id=pair.pair_id, pool=pair.pool,
            prompt_id=pair.prompt_id, model_a=pair.a.model, model_b=pair.b.model, gold_better=pair.gold_better,
            left=left, answers={axis: {"left": left, "right": right, "tie": "tie"}[answer]
                                for axis, answer in shown.items()},
            seconds=seconds, time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            task_list_version=(tasks or self.tasks).version)
        if pending != decision_id:  # another decision on this pair is being written right now
            return Outcome("already_decided", decision, pair)
        try:
            created, stored = write_decision(decision, self.votes, self.state)
        except BaseException:
            with self._lock:
                self._release(key, decision_id)
            raise
        with self._lock:  # indexed before the pair is released: no second decision slips in between
            if created:
                self._by_id[decision_id] = stored
                self._done[rater_id][pair.pair_id] = stored
            else:
                self._index(stored)
            self._release(key, decision_id)
        return Outcome("stored" if created else "duplicate", stored, pair)

    def _release(self, key: tuple[str, str], decision_id: str) -> None:
        if self._pending.get(key) == decision_id:
            del self._pending[key]
