"""The task lists a running rating page serves: a fixed one, or the newest `rating_tasks` wrote.

`svd-dag rating serve` without `--tasks` follows `rating_tasks/latest.json`: at most every
`check_every_s` seconds a request looks at the pointer, and a new list is loaded, validated and
served from then on, without a restart. A list that fails to load is logged and skipped: the
page keeps serving the one it has. The lists served before stay answerable (the last few), so a
rater who was shown a pair just before the switch can still play its videos and vote on it.
Pair ids hash a pair's content, so a pair in both lists is one pair (decided once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from svd_dag.rating.tasks import Pair, TaskList, TaskListError

log = logging.getLogger(__name__)
KEEP_PREVIOUS = 3  # earlier lists still answering votes and media after a switch


class TaskSource:
    """The current task list and the few before it; `resolve` names the newest list's URI (or
    None), `load` reads one. Without `resolve` the list never changes."""

    def __init__(self, first: TaskList, resolve: Callable[[], str | None] | None = None,
                 load: Callable[[str], TaskList] | None = None, check_every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if resolve is not None and load is None:
            raise ValueError("a followed task source needs `load` as well as `resolve`")
        self._current, self._previous = first, deque(maxlen=KEEP_PREVIOUS)
        self._resolve, self._load, self._every, self._clock = resolve, load, check_every_s, clock
        self._checked_at = clock() if not first.waiting else float("-inf")  # no list yet: look at once
        self._checking = threading.Lock()

    @property
    def follows(self) -> bool:
        return self._resolve is not None

    @property
    def check_every_s(self) -> float:
        return self._every

    @property
    def current(self) -> TaskList:
        """The list new pairs come from (checking the pointer first when it is time to)."""
        if self._resolve is not None and self._clock() - self._checked_at >= self._every:
            self._check()
        return self._current

    def _check(self) -> None:
        if not self._checking.acquire(blocking=False):
            return  # another request is looking: serve the current list meanwhile
        try:
            self._checked_at = self._clock()
            try:
                uri = self._resolve()
            except (OSError, ValueError, KeyError) as e:  # storage unreachable, a pointer being rewritten
                log.warning("could not read the newest task list's pointer (keeping %s): %r", self._current.uri, e)
                return
            if uri is None or uri == self._current.uri:
                return
            try:
                new = self._load(uri)
            except (TaskListError, OSError) as e:
                log.warning("new task list %s not served (keeping %s): %s", uri, self._current.uri, e)
                return
            log.warning("now serving task list %s (version %s, %d pairs); was %s", new.uri, new.version,
                        len(new.pairs), self._current.version)
            self._previous.appendleft(self._current)
            self._current = new
        finally:
            self._checking.release()

    def _lists(self) -> list[TaskList]:
        return [self.current, *self._previous]

    def pair(self, pair_id: str) -> tuple[Pair, TaskList] | tuple[None, None]:
        """The pair and the list it was found in (the current one first), or (None, None)."""
        for tasks in self._lists():
            found = tasks.pair(pair_id)
            if found is not None:
                return found, tasks
        return None, None

    def media_uri(self, mid: str) -> str | None:
        """The file behind a media id of the current list or one served before it."""
        for tasks in self._lists():
            uri = tasks.media_uri(mid)
            if uri is not None:
                return uri
        return None
