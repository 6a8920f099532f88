"""Resumable training state, kept under the storage root so any machine can resume a run.

A state is a folder `step-<N>/` under the run's state URI (local folder or s3://) holding
what `accelerator.save_state` writes (weights, optimizer, scheduler, EMA: rank 0; RNG
states: one file per rank), each rank's clip usage (`usage-<rank>/`) and `progress.json`
(how many micro-batches the loader had handed out). It counts only once `.complete` is
in it, written by rank 0 after every rank has put its part: a run killed mid-save resumes
from the state before.

Locally the state URI is the folder accelerate writes into. On s3:// each rank saves into
its own local work folder and uploads the files that are its own; a resume downloads the
newest complete state into the rank's work folder, so a fresh pod with an empty disk (or
another machine) resumes where the run stopped. States are scratch, not versioned
artefacts: the newest `KEEP` are kept, older ones deleted.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from typing import Any

STATE_PREFIX = "step-"
COMPLETE = ".complete"
PROGRESS = "progress.json"
KEEP = 2
# Files accelerate writes once per rank (random_states_<rank>.pkl) and ours (usage-<rank>/).
_RANK_FILE = re.compile(r"(?:^|/)(?:random_states_(\d+)\.pkl|usage-(\d+)/.*)$")


@dataclass(frozen=True)
class Progress:
    step: int
    micro_batches: int  # micro-batches each rank's loader handed out since step 0 (all epochs)
    samples: int = 0  # samples trained on since step 0, all ranks


class ResumableState:
    """The state folders of one run: `uri` (under the storage root) and, for a remote URI,
    `work_dir`, this rank's local folder for saving and downloading."""

    def __init__(self, uri: str, work_dir: str, rank: int, storage_options: dict[str, Any] | None = None):
        from svd_dag.storage import Store

        self.store = Store(uri, storage_options)
        self.options = dict(storage_options or {})
        self.rank = rank
        self.work_dir = work_dir

    @property
    def is_local(self) -> bool:
        return self.store.is_local

    @property
    def uri(self) -> str:
        return self.store.root

    def latest(self) -> Progress | None:
        """The newest complete state, or None (a fresh run)."""
        complete = [step for step, done in self._states() if done]
        if not complete:
            return None
        step = max(complete)
        saved = json.loads(self.store.read_bytes(f"{STATE_PREFIX}{step}/{PROGRESS}"))
        return Progress(**saved)

    def _states(self) -> list[tuple[int, bool]]:
        """(step, complete) of every state folder, read fresh (another machine may have added one)."""
        fs = self.store.fs
        fs.invalidate_cache()
        if not fs.exists(self.uri):
            return []
        found = []
        for path in fs.ls(self.uri, detail=False):
            m = re.fullmatch(STATE_PREFIX + r"(\d+)", posixpath.basename(path.rstrip("/")))
            if m:
                found.append((int(m.group(1)), fs.exists(posixpath.join(self.store.uri(m.group(0)), COMPLETE))))
        return sorted(found)

    def save_dir(self, step: int) -> str:
        """The local folder `accelerator.save_state` writes this step into."""
        name = f"{STATE_PREFIX}{step}"
        return self.store.uri(name) if self.is_local else os.path.join(self.work_dir, name)

    def upload_own(self, step: int) -> None:
        """Put this rank's part of a saved state under the state URI (nothing to do locally):
        rank 0 everything that is no other rank's, every other rank its own files."""
        if self.is_local:
            return
        folder = self.save_dir(step)
        for base, _, files in os.walk(folder):
            for name in files:
                rel = os.path.relpath(os.path.join(base, name), folder).replace(os.sep, "/")
                owner = _owner(rel)
                if owner == self.rank or (owner is None and self.rank == 0):
                    self.store.fs.put_file(os.path.join(base, name), self.store.uri(f"{STATE_PREFIX}{step}", rel))

    def mark_complete(self, progress: Progress) -> None:
        """Rank 0, after every rank uploaded: the state counts from now on; older ones go."""
        name = f"{STATE_PREFIX}{progress.step}"
        self.store.write_bytes(f"{name}/{PROGRESS}", json.dumps(progress.__dict__).encode())
        self.store.write_bytes(f"{name}/{COMPLETE}", b"")
        self._prune()

    def discard_local(self, step: int) -> None:
        """Drop this machine's local copy of an uploaded state (nothing to do locally)."""
        if not self.is_local:
            shutil.rmtree(self.save_dir(step), ignore_errors=True)

    def fetch(self, step: int) -> str:
        """A local folder holding state `step`, for `accelerator.load_state`: the state itself
        locally, else a download of it (made once per machine, complete or not at all)."""
        from svd_dag.storage import local_folder

        if self.is_local:
            return self.save_dir(step)
        name = f"{STATE_PREFIX}{step}"
        return local_folder(self.store.uri(name), os.path.join(self.work_dir, "fetched", name),
                            self.options)

    def _prune(self) -> None:
        """Keep the newest KEEP complete states; drop older ones and unfinished ones before them."""
        states = self._states()
        complete = [step for step, done in states if done]
        if not complete:
            return
        keep = set(complete[-KEEP:])
        for step, _ in states:
            if step not in keep and step < complete[-1]:
                old = self.store.uri(f"{STATE_PREFIX}{step}")
                if self.is_local:
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    self.store.fs.rm(old, recursive=True)


def _owner(rel: str) -> int | None:
    m = _RANK_FILE.search(rel)
    if not m:
        return None
    return int(m.group(1) or m.group(2))
