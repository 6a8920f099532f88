"""Thread budgets for per-video work: a decoder running ahead of the analysis, OpenCV's pool.

A video is decoded in its own thread while the calling thread analyses the frames already
decoded (PyAV and OpenCV release the GIL while they work). OpenCV's own thread pool is
turned off for that time: on frames a few hundred pixels wide, its fork/join per call
costs more than the call itself, and the cores are busy with the decoder anyway
(docs/performance.md, "Curation").
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """Run the block with OpenCV's thread pool at `n` threads, restored afterwards."""
    import cv2  # not at module top: the executor seam imports this module in the code server

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


@contextlib.contextmanager
def read_ahead(produce: Callable[[], Iterable[T]], batch: int = 8, depth: int = 4) -> Iterator[Iterator[T]]:
    """Iterate `produce()` in a background thread, up to `batch * depth` items ahead.

    Items cross threads in batches (one queue operation per `batch` items). An exception
    in the producer is raised in the consumer at the point where its items run out. On
    leaving the block, early or by an exception, the producer is stopped and joined, so
    whatever it reads from (an open container) may be closed right after.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        chunk: list = []
        try:
            for item in produce():
                chunk.append(item)
                if len(chunk) >= batch:
                    if not put(chunk):
                        return
                    chunk = []
            if chunk and not put(chunk):
                return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            if chunk and not put(chunk):
                return
            put(_Failure(e))

    def consume() -> Iterator[T]:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield from item

    worker = threading.Thread(target=run, name="read-ahead", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()
