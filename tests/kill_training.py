"""Killing a running training from a test: every `svd_dag.training.train` process under this
one (all machines' launches and their ranks), by pid, once a condition holds."""

import threading
import time
from typing import Callable

import psutil


def kill_training_when(ready: Callable[[], object], stop: threading.Event, killed: list,
                       after_kill: Callable[[], None] = lambda: None) -> None:
    """Poll `ready()` until it is truthy, then kill the training processes (their pids go to
    `killed`) and call `after_kill()` (before Dagster's retry of the step starts)."""
    while not stop.is_set():
        if ready():
            for p in psutil.Process().children(recursive=True):
                try:
                    if "svd_dag.training.train" in " ".join(p.cmdline()):
                        p.kill()
                        killed.append(p.pid)
                except psutil.NoSuchProcess:
                    pass
            if killed:
                after_kill()
                return
        time.sleep(0.05)


def run_killed(execute: Callable[[], object], ready: Callable[[], object],
               after_kill: Callable[[], None] = lambda: None) -> tuple[object, list]:
    """`execute()` while a watcher kills the training once `ready()`; (its result, killed pids)."""
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_training_when, args=(ready, stop, killed, after_kill))
    watcher.start()
    try:
        result = execute()
    finally:
        stop.set()
        watcher.join()
    return result, killed


def retries_of(result) -> int:
    """How many times the run's steps were put up for retry."""
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")
