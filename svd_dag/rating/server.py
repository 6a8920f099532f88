"""Running the rating page: `serve` (uvicorn, in this process) and `RatingServer` (a subprocess).

`serve` is what `svd-dag rating serve` runs: the task list is loaded and validated first (a
bad one stops the start with its problems listed); given `resolve_latest` (the CLI without
`--tasks`), a newer list is picked up while it runs (`follow.TaskSource`). Votes go to `settings.votes_uri`, decision
records and raters live in `settings.rating_uri`, and the admin page's token is
`settings.rating_admin_token` or, unset, a fresh one printed at start. One process, one
event loop; the blocking file writes run in its thread pool.

`RatingServer` starts that console command on 127.0.0.1 and a free port, waits until it
answers, and stops it by its pid (SIGTERM, then SIGKILL): for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable, Mapping

from svd_dag.settings import Settings, load_settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(tasks_uri: str | None, host: str = "127.0.0.1", port: int = 8765, settings: Settings | None = None,
          log_level: str = "warning", access_log: bool = False, out: IO[str] = sys.stderr,
          resolve_latest: Callable[[], str | None] | None = None, check_every_s: float = 30.0) -> None:
    """Serve the rating page for the task list at `tasks_uri` until interrupted; with
    `resolve_latest` (the newest list's URI), switch to a newer list when one appears, and
    with no list yet (`tasks_uri` None) serve "no pairs yet" until the first one appears."""
    import uvicorn

    from svd_dag.rating.app import create_app
    from svd_dag.rating.follow import TaskSource
    from svd_dag.rating.tasks import load_task_list, no_task_list
    from svd_dag.storage import Store

    if tasks_uri is None and resolve_latest is None:
        raise ValueError("serve: a fixed task list needs its URI")
    settings = settings or load_settings()
    if settings.rating_admin_token is not None and len(settings.rating_admin_token) < 16:
        raise SystemExit("svd-dag rating serve: SVD_DAG_RATING_ADMIN_TOKEN must be at least 16 characters")
    tasks = load_task_list(tasks_uri) if tasks_uri else no_task_list()
    admin_token = settings.rating_admin_token or secrets.token_urlsafe(24)
    source = TaskSource(tasks, resolve=resolve_latest, load=load_task_list, check_every_s=check_every_s)
    app = create_app(source, Store(settings.votes_uri), Store(settings.rating_uri), admin_token)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    shown = ("no task list yet (raters see \"no pairs yet\" until rating_tasks writes one)" if tasks.waiting else
             f"task list {tasks.uri} (version {tasks.version}, {len(tasks.pairs)} pairs, "
             f"{sum(p.is_gold for p in tasks.pairs)} gold)")
    print(f"svd-dag rating: {shown}"
          + (f"; a newer list is served within {check_every_s:g} s of rating_tasks writing it\n" if resolve_latest
             else "; fixed (--tasks)\n") +
          f"  votes to {settings.votes_uri}, decisions and raters in {settings.rating_uri}\n"
          f"  serving on {url} (rater links: svd-dag rating add-rater <name>)", file=out)
    if settings.rating_admin_token:
        print(f"  admin page: {url}/admin/<SVD_DAG_RATING_ADMIN_TOKEN>", file=out)
    else:
        print(f"  admin page (token made for this run; set SVD_DAG_RATING_ADMIN_TOKEN to keep one): "
              f"{url}/admin/{admin_token}", file=out)
    if not _is_loopback(host):
        print(f"  warning: {host} is not loopback: the page is plain HTTP, put a TLS proxy in front "
              "(the links carry the raters' tokens)", file=out)
    out.flush()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, backlog=4096,
                timeout_graceful_shutdown=5, server_header=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RatingServer:
    """`svd-dag rating serve` in a subprocess on 127.0.0.1:<free port>, for tests and benchmarks.

    `tasks_uri` None serves the newest list of the storage root and follows it (checked every
    `check_every_s`). `env` is the child's whole environment (default: this process's); when it
    sets no SVD_DAG_RATING_ADMIN_TOKEN one is made (`admin_token`). Output goes to `log` (a
    path; default: discarded). Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, tasks_uri: str | None, env: Mapping[str, str] | None = None, log: str | Path | None = None,
                 port: int | None = None, start_timeout: float = 60.0, check_every_s: float | None = None):
        self.env = dict(os.environ if env is None else env)
        self.admin_token = self.env.get("SVD_DAG_RATING_ADMIN_TOKEN") or secrets.token_urlsafe(24)
        self.env["SVD_DAG_RATING_ADMIN_TOKEN"] = self.admin_token
        self.tasks_uri, self.log, self.start_timeout, self.check_every_s = tasks_uri, log, start_timeout, check_every_s
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def admin_url(self) -> str:
        return f"{self.url}/admin/{self.admin_token}"

    def rater_url(self, token: str) -> str:
        return f"{self.url}/r/{token}"

    def __enter__(self) -> RatingServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        out = open(self.log, "a") if self.log else subprocess.DEVNULL
        which = ["--tasks", self.tasks_uri] if self.tasks_uri else []
        if self.check_every_s is not None:
            which += ["--check-every", str(self.check_every_s)]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "svd_dag.cli", "rating", "serve", *which,
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log:
                out.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def tail(self, n: int = 3000) -> str:
        """The end of the server's log ("" without one)."""
        with contextlib.suppress(OSError, TypeError):
            return Path(self.log).read_text()[-n:]
        return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"svd-dag rating serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if r.status == 200 and json.load(r).get("ok"):
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"svd-dag rating serve did not answer {self.url}/healthz in {self.start_timeout:.0f} s:\n"
                           f"{self.tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's pid (uvicorn finishes the requests in flight), SIGKILL after `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
