"""The code that made an artefact: package version, git commit, source digest, lock-file hash,
library versions.

Recorded with every checkpoint so an auditor can rebuild the environment. Nothing is
guessed: a commit is read from the checkout the package runs from (`git rev-parse`), and is
"unknown" when the package is installed elsewhere; a checkout with uncommitted changes to
tracked files says so (`git_dirty`), since its commit alone does not name the code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_DIR.parent
LOCK_FILE = REPO_ROOT / "requirements" / "lock.txt"
LIBRARIES = ("torch", "diffusers", "accelerate", "transformers", "peft", "dagster", "duckdb", "mlflow")
UNKNOWN = "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_state() -> tuple[str, bool | None]:
    """(commit, dirty) when the package's own folder is inside a git checkout, else ("unknown", None)."""
    top = _git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != REPO_ROOT:
        return UNKNOWN, None  # installed from a wheel into some other project's tree
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return UNKNOWN, None
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "svd_dag", "requirements", "pyproject.toml")
    return commit, None if status is None else bool(status)


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return UNKNOWN


def source_sha256(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the relative paths and bytes of the package's Python files: names the code
    exactly even where no commit does (a wheel install, uncommitted edits)."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_record() -> dict[str, Any]:
    """What produced an artefact in this process (computed once: the code does not change under it)."""
    commit, dirty = _git_state()
    return {
        "package": "svd-dag", "package_version": _version("svd-dag"), "git_commit": commit, "git_dirty": dirty,
        "source_sha256": source_sha256(),
        "lock_sha256": _file_sha256(LOCK_FILE),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


def code_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The record as flat catalog columns (`checkpoints` rows)."""
    libs = record.get("libraries", {})
    return {"code_package_version": record.get("package_version"), "code_git_commit": record.get("git_commit"),
            "code_git_dirty": record.get("git_dirty"),
            "code_source_sha256": record.get("source_sha256"), "code_lock_sha256": record.get("lock_sha256"),
            "code_torch": libs.get("torch"), "code_diffusers": libs.get("diffusers"),
            "code_accelerate": libs.get("accelerate")}
