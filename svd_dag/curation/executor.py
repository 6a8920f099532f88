"""The executor seam for per-video work: `map(fn, items)` with failures kept per item.

The default runs a local process pool sized to the machine; the cluster backend
(`ray_executor.py`) implements `map` and `imap` (outcomes as they finish) with the same
contract. `fn` must be a picklable top-level function. One failing item never fails the batch: its outcome carries the reason.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from svd_dag.curation.media import VideoError
from svd_dag.curation.threads import available_cpus

_SPAWN = mp.get_context("spawn")


@dataclass
class Outcome:
    item: Any
    value: Any = None
    error: str | None = None
    attempts: int = 1  # 2 when the item was rerun alone after a worker process died
    node: str | None = None  # the Ray node that ran it (None: this machine's pool)

    @property
    def ok(self) -> bool:
        return self.error is None


def item_name(item: Any) -> str:
    """`<uri>: ` for items that name a file, so the executor's own errors read like VideoError's."""
    uri = getattr(item, "uri", None)
    return f"{uri}: " if uri else ""


def run_one(fn: Callable[[Any], Any], item: Any) -> Outcome:
    try:
        return Outcome(item, fn(item))
    except VideoError as e:
        return Outcome(item, error=str(e))
    except Exception as e:  # noqa: BLE001 - any crash of one item is reported, the batch goes on
        last = traceback.extract_tb(e.__traceback__)[-1]
        return Outcome(item, error=f"{type(e).__name__}: {e} (at {os.path.basename(last.filename)}:{last.lineno})")


class VideoExecutor(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Outcome]: ...

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Outcome]: ...

    def threads_per_item(self, n_items: int) -> int:
        """CPUs each item may use when `n_items` run through `map` (its decode threads)."""
        ...


class LocalProcessExecutor:
    """A spawn-context process pool (no fork: the parent may hold threads and torch).

    A worker process that dies (a decoder segfault, an OOM kill) breaks the whole pool. The
    items the workers held then are rerun one per process, so only an item that kills its
    worker twice fails (quarantined); items not yet begun go on in a fresh pool.
    """

    def __init__(self, max_workers: int = 0):
        self.max_workers = max_workers if max_workers > 0 else available_cpus()

    def threads_per_item(self, n_items: int) -> int:
        # The CPUs are shared by the workers running at once: one video alone gets them all.
        return max(1, available_cpus() // max(1, min(self.max_workers, n_items)))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Outcome]:
        """Outcomes in the order of `items`."""
        return [o for _, o in sorted(self._indexed(fn, items), key=lambda pair: pair[0])]

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Outcome]:
        """Outcomes as items finish (started in the order given), so the caller can commit
        results in batches while the rest still run."""
        return (o for _, o in self._indexed(fn, items))

    def _indexed(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        workers = min(self.max_workers, len(items))
        if workers <= 1:
            yield from ((i, run_one(fn, item)) for i, item in enumerate(items))
            return
        todo = list(range(len(items)))
        while todo:
            started = _SPAWN.RawArray("b", len(todo))
            lost: list[int] = []  # positions in `todo` still unfinished when the pool broke
            with ProcessPoolExecutor(workers, mp_context=_SPAWN, initializer=_init_worker, initargs=(started,)) as pool:
                futures = {pool.submit(_run_marked, fn, items[i], k): k for k, i in enumerate(todo)}
                for fut in as_completed(futures):
                    k = futures[fut]
                    try:
                        outcome = _outcome(fut, items[todo[k]])
                    except BrokenProcessPool:
                        lost.append(k)
                        continue
                    yield todo[k], outcome
            lost.sort()
            # A pool that broke before any item began blames the first ones it would have run,
            # so that every pass settles at least one item.
            blamed = {k for k in lost if started[k]} or set(lost[:workers])
            yield from _isolated(fn, items, [todo[k] for k in lost if k in blamed], workers)
            todo = [todo[k] for k in lost if k not in blamed]


# In a pool worker: one flag per item of its pool's batch, set when the item begins. Not
# `Future.running()`: the pool marks futures running as it queues them (one more than it has
# workers) and fails every unfinished one alike when it breaks; only the workers know.
_started = None


def _init_worker(started) -> None:
    global _started
    _started = started


def _run_marked(fn: Callable[[Any], Any], item: Any, k: int) -> Outcome:
    """`run_one` in a pool worker, first flagging batch position `k` as begun: when a worker
    dies, the parent can then tell the items the workers held from those still queued."""
    _started[k] = 1
    return run_one(fn, item)


def _outcome(fut: Future, item: Any) -> Outcome:
    """The finished future's outcome, carrying the caller's `item` (not the worker's copy).
    Raises BrokenProcessPool when a worker process died."""
    try:
        outcome = fut.result()
    except BrokenProcessPool:
        raise
    except Exception as e:  # noqa: BLE001 - the pool still works, e.g. a result that cannot be pickled
        return Outcome(item, error=f"{item_name(item)}worker process failed: {type(e).__name__}: {e}")
    outcome.item = item
    return outcome


def _isolated(fn: Callable[[Any], Any], items: Sequence[Any], suspects: list[int],
              workers: int) -> Iterator[tuple[int, Outcome]]:
    """Rerun each suspect alone in a one-process pool, `workers` at a time, so a bystander of
    a dead worker succeeds and only the item that kills its worker dies again."""
    for first in range(0, len(suspects), workers):
        with ExitStack() as pools:
            futures = {pools.enter_context(ProcessPoolExecutor(1, mp_context=_SPAWN)).submit(run_one, fn, items[i]): i
                       for i in suspects[first:first + workers]}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    outcome = _outcome(fut, items[i])
                except BrokenProcessPool as e:
                    outcome = Outcome(items[i], error=f"{item_name(items[i])}worker process died twice while "
                                                      f"processing this item (BrokenProcessPool: {e}); quarantined")
                outcome.attempts = 2
                yield i, outcome


def make_executor(backend: str = "local", max_workers: int = 0) -> VideoExecutor:
    if backend == "local":
        return LocalProcessExecutor(max_workers)
    raise ValueError(f"unknown executor backend {backend!r}: supported here: 'local' (the 'ray' backend is built "
                     "by VideoExecutorResource, which holds the cluster's address)")
