"""Raters: ids an admin issues, each with a secret token that is the rater's link to the page.

One JSON file per rater, `raters/<rater_id>.json` in the rating state folder, created once
(`Store.create_bytes`: two admins adding the same name cannot both succeed, and no file is
ever rewritten). The rater id is what vote files carry in `rater_id`; the token, in the
page's URL (`/r/<token>`), is checked on every request. Removing a rater deletes the file;
a running server sees additions and removals within `Raters.refresh_s` seconds.

Rater ids are short names of letters, digits, '_', '.', '@' and '-', and never start with
"judge:", the prefix that marks automatic judges in vote files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import re
import secrets
import threading
import time
from dataclasses import dataclass

from svd_dag.evaluation.votes import JUDGE_PREFIX, STAGING_NAME
from svd_dag.storage import Store

RATER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
FOLDER = "raters"
log = logging.getLogger(__name__)


class RaterError(ValueError):
    """A rater id that cannot be issued or found."""


@dataclass(frozen=True)
class Rater:
    """An issued rater: the id their votes carry and the token of their link."""
    rater_id: str
    token: str
    created_at: str


def check_rater_id(rater_id: str) -> str:
    """`rater_id` if a human rater may have it, else `RaterError` saying why."""
    if rater_id.startswith(JUDGE_PREFIX):
        raise RaterError(f"rater id {rater_id!r} starts with {JUDGE_PREFIX!r}, which marks automatic judges")
    if not RATER_ID.match(rater_id):
        raise RaterError(f"rater id {rater_id!r} must be 1-64 letters, digits, '_', '.', '@' or '-', "
                         "starting with a letter or digit")
    return rater_id


class Raters:
    """The raters of one rating state folder, with a cache for the server's token checks."""

    def __init__(self, store: Store, refresh_s: float = 5.0):
        self.store, self.refresh_s = store, refresh_s
        self._by_token: dict[str, Rater] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def path(self, rater_id: str) -> str:
        return self.store.uri(FOLDER, f"{check_rater_id(rater_id)}.json")

    def add(self, rater_id: str) -> Rater:
        """Issue a new rater with a fresh token; `RaterError` if the id is invalid or taken."""
        rater = Rater(rater_id=check_rater_id(rater_id), token=secrets.token_urlsafe(24),
                      created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        data = json.dumps({"rater_id": rater.rater_id, "token": rater.token, "created_at": rater.created_at}).encode()
        if not self.store.create_bytes(posixpath.join(FOLDER, f"{rater_id}.json"), data):
            raise RaterError(f"rater {rater_id!r} already exists ({self.path(rater_id)}); "
                             "remove it first to issue a new link")
        return rater

    def remove(self, rater_id: str) -> None:
        """Withdraw a rater's link (their decisions stay); `RaterError` if there is no such rater."""
        path = self.path(rater_id)
        if not self.store.exists(path):
            raise RaterError(f"no rater {rater_id!r} ({path} does not exist)")
        self.store.fs.rm_file(path)

    def all(self) -> list[Rater]:
        """Every rater in the folder, by id; a file that is not a rater record is logged and skipped."""
        folder = self.store.uri(FOLDER)
        if not self.store.fs.exists(folder):
            return []
        paths = [p for p in self.store.fs.find(folder) if p.endswith(".json")
                 and not posixpath.basename(p).startswith((".", "_")) and not STAGING_NAME.search(p)]
        raters = []
        for path, data in sorted(self.store.fs.cat(paths, on_error="omit").items()) if paths else []:  # omit: removed meanwhile
            try:
                doc = json.loads(data)
                rater = Rater(rater_id=check_rater_id(doc["rater_id"]), token=doc["token"],
                              created_at=doc.get("created_at", ""))
                if not isinstance(rater.token, str) or not TOKEN.match(rater.token):
                    raise ValueError("its token is not 16-64 URL-safe characters")
            except (ValueError, KeyError, TypeError) as e:
                log.warning("%s is not a rater record, skipped: %s", path, e)
                continue
            raters.append(rater)
        return sorted(raters, key=lambda r: r.rater_id)

    def by_token(self, token: str) -> Rater | None:
        """The rater whose link has this token, or None. The list is read again when it is older
        than `refresh_s`, and on an unknown token at most once a second (a stream of bad tokens
        does not turn into a stream of folder listings)."""
        if not TOKEN.match(token or ""):
            return None
        rater = self._by_token.get(token)
        if self._due(rater is None):
            with self._lock:
                if self._due(self._by_token.get(token) is None):  # another thread may just have read it
                    self._by_token = {r.token: r for r in self.all()}
                    self._loaded_at = time.monotonic()
            rater = self._by_token.get(token)
        return rater

    def _due(self, missing: bool) -> bool:
        age = time.monotonic() - self._loaded_at
        return age > self.refresh_s or (missing and age > 1.0)
