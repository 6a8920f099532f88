"""What the main command shows while it runs: one line per asset, everything else in a log file.

Dagster's DEBUG events, library INFO lines, progress bars and the training subprocesses'
output all go to the log file (file descriptors 1 and 2 point there while the jobs run);
the terminal gets `[svd-dag] <job> <done>/<total> <asset> <outcome> in <s> s` from a thread
that follows the run's events in the instance.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Callable, Iterator, TextIO


@contextlib.contextmanager
def output_to_log(log_path: str) -> Iterator[TextIO]:
    """Point stdout and stderr (this process's and its children's) at `log_path`; yields a
    stream to the terminal as it was."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def run_with_progress(instance, job, terminal: TextIO, execute: Callable[[], object]):
    """`execute()` (the job's execute_in_process), printing a line to `terminal` as each of the
    job's steps ends."""
    total = len(job.graph.nodes)
    done: set[str] = set()
    stop = threading.Event()
    known_runs = {r.dagster_run.run_id for r in instance.get_run_records(limit=50)}

    def follow() -> None:
        started: dict[str, float] = {}
        run_id = None
        cursor = 0
        while not stop.is_set() or run_id is None:
            if run_id is None:
                fresh = [r for r in instance.get_run_records(limit=5) if r.dagster_run.run_id not in known_runs
                         and r.dagster_run.job_name == job.name]
                if not fresh:
                    if stop.wait(0.2):
                        return
                    continue
                run_id = fresh[0].dagster_run.run_id
            entries = instance.all_logs(run_id)
            for entry in entries[cursor:]:
                _report(entry, job.name, total, done, started, terminal)
            cursor = len(entries)
            if stop.wait(0.5):
                for entry in instance.all_logs(run_id)[cursor:]:
                    _report(entry, job.name, total, done, started, terminal)
                return

    def follow_or_say_why() -> None:
        try:
            follow()
        except Exception as e:  # progress is a courtesy: the run goes on, the log says why it stopped
            print(f"[svd-dag] progress display stopped: {e!r}", file=sys.stderr)

    watcher = threading.Thread(target=follow_or_say_why, daemon=True)
    watcher.start()
    try:
        return execute()
    finally:
        stop.set()
        watcher.join(timeout=10)


def _report(entry, job_name: str, total: int, done: set, started: dict, terminal: TextIO) -> None:
    event = entry.dagster_event
    if event is None or not entry.step_key:
        return
    kind = event.event_type_value
    if kind == "STEP_START":
        started[entry.step_key] = entry.timestamp
    elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED", "STEP_UP_FOR_RETRY"):
        seconds = entry.timestamp - started.get(entry.step_key, entry.timestamp)
        if kind != "STEP_UP_FOR_RETRY":
            done.add(entry.step_key)
        outcome = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped",
                   "STEP_UP_FOR_RETRY": "retrying"}[kind]
        terminal.write(f"[svd-dag] {job_name:<22} {len(done):>2}/{total:<2} {entry.step_key:<32} {outcome} "
                       f"in {seconds:.1f} s\n")
        terminal.flush()


def log_path_for(home: str) -> str:
    return os.path.join(home, "logs", time.strftime("demo-%Y%m%d-%H%M%S.log"))
