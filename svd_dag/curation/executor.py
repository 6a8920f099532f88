"""The executor seam for per-video work: `map(fn, items)` with failures kept per item.

The default runs a local process pool sized to the machine; a cluster backend (Ray) only
has to implement `map` and `imap` (outcomes as they finish) with the same contract. `fn` must be a picklable top-level
function. One failing item never fails the batch: its outcome carries the reason.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from svd_dag.curation.media import VideoError
from svd_dag.curation.threads import available_cpus


@dataclass
class Outcome:
    item: Any
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _run_one(fn: Callable[[Any], Any], item: Any) -> Outcome:
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
    """A spawn-context process pool (no fork: the parent may hold threads and torch)."""

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
            yield from ((i, _run_one(fn, item)) for i, item in enumerate(items))
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, fn, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    outcome = fut.result()
                    outcome.item = items[i]  # the caller's object, not the worker's copy
                except Exception as e:  # noqa: BLE001 - a worker that died (OOM, segfault in a decoder)
                    outcome = Outcome(items[i], error=f"worker process failed: {type(e).__name__}: {e}")
                yield i, outcome


def make_executor(backend: str = "local", max_workers: int = 0) -> VideoExecutor:
    if backend == "local":
        return LocalProcessExecutor(max_workers)
    raise ValueError(f"unknown executor backend {backend!r}: supported: 'local' (Ray is planned)")
