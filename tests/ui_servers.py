"""Helpers for the browser tests of the Dagster UI (tests/test_ui_browser.py).

- `browser_unavailable()`: why Chromium cannot be used here (None when it can); `require_browser()`
  skips or fails a test on that.
- `make_homes()` / `materialize()`: a persistent DAGSTER_HOME and SVD_DAG_HOME with real runs in them
  (materialized in a subprocess, before the UI starts, so the UI shows them).
- `DagsterDev`: `dagster dev` (webserver + daemon) on 127.0.0.1, in its own session with SIGINT/SIGTERM
  reset, stopped by its process group.
- `MlflowUi`: `mlflow ui` over the home's tracking store on 127.0.0.1, stopped by its process group.
- `open_browser()`: Debian's Chromium through Playwright, headless, with every request that leaves
  loopback aborted and the first-visit "Join the Dagster community" dialog pre-dismissed.

Nothing here talks to anything outside 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import _free_port as free_port
from conftest import reset_signals

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/lib/chromium/chromium"
# The UI's first-visit dialog ("Join the Dagster community", NUX/CommunityNux.tsx in the webserver's
# bundle) is skipped when this localStorage key holds a truthy JSON value (useStateWithStorage).
NUX_STORAGE_KEY = "communityNux"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def browser_unavailable() -> str | None:
    """None when Chromium is here; otherwise why, when installing it was impossible (skip);
    raises when it could have been installed (scripts/bootstrap.sh does that; the tests must run)."""
    if os.path.exists(CHROMIUM):
        return None
    if os.environ.get("SVD_DAG_SKIP_BROWSER") == "1":
        return f"SVD_DAG_SKIP_BROWSER=1 and {CHROMIUM} is absent"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is absent and there is no apt-get to install Debian's chromium"
    if os.geteuid() != 0 and (shutil.which("sudo") is None
                              or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0):
        return f"{CHROMIUM} is absent and installing it needs root (no passwordless sudo)"
    raise RuntimeError(f"{CHROMIUM} is absent but could be installed: run scripts/bootstrap.sh (make test does)")


def require_browser() -> None:
    """In a test or fixture: skip when Chromium cannot be had here (`browser_unavailable`), fail
    when it could have been installed but was not."""
    import pytest

    try:
        reason = browser_unavailable()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    if reason:
        pytest.skip(reason)


def make_homes(root: Path, videos: list[str]) -> dict[str, str]:
    """A Dagster home (telemetry off) and an svd-dag home whose raw folder holds copies of `videos`.
    Returns the environment the materialization and `dagster dev` run with."""
    dagster_home, home, raw = root / "dagster_home", root / "svd_home", root / "raw"
    for d in (dagster_home, home, raw):
        d.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for v in videos:
        shutil.copy(v, raw / os.path.basename(v))
    # MLFLOW_TRACKING_URI too: mlflow.set_tracking_uri in an earlier test leaves it in os.environ
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVD_DAG_", "DAGSTER_", "MLFLOW_"))}
    env.update({
        "DAGSTER_HOME": str(dagster_home), "SVD_DAG_HOME": str(home), "SVD_DAG_RAW_URI": str(raw),
        "SVD_DAG_MODELS_URI": str(root / "models"), "DAGSTER_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    })
    return env


_MATERIALIZE = """
import json, sys
import dagster as dg
from svd_dag.definitions import build_defs
job, run_config = sys.argv[1], json.loads(sys.argv[2])
defs = build_defs()
if job.startswith("assets:"):  # assets:<key>,<key>: the implicit job of just those assets
    keys = [dg.AssetKey.from_user_string(k) for k in job.removeprefix("assets:").split(",")]
    job_def = defs.resolve_implicit_job_def_def_for_assets(keys).get_subset(asset_selection=set(keys))
else:
    job_def = defs.resolve_job_def(job)
with dg.DagsterInstance.get() as instance:
    result = job_def.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
    versions = {e.event_specific_data.materialization.asset_key.to_user_string():
                e.event_specific_data.materialization.metadata["dataset_version"].value
                for e in result.get_asset_materialization_events()
                if "dataset_version" in e.event_specific_data.materialization.metadata}
    print(json.dumps({"success": result.success, "run_id": result.run_id, "dataset_versions": versions}))
"""


def materialize(env: dict[str, str], job: str, run_config: dict, log: Path, timeout: float = 900) -> dict:
    """Runs `job` (a job name, or "assets:<key>,<key>" for just those assets) in process, in a
    subprocess under `env` (so its runs land in env's DAGSTER_HOME).
    Returns {success, run_id, dataset_versions: {asset: version}}; the run's log goes to `log`."""
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "-c", _MATERIALIZE, job, json.dumps(run_config)], env=env, cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=out, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"materializing {job} failed (rc {proc.returncode}):\n{log.read_text()[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class LoopbackServer:
    """A server command on 127.0.0.1:<free port>, in its own session with SIGINT/SIGTERM reset,
    its output in `log`, stopped by its process group (`stop_signal`, then SIGKILL)."""

    name = "server"
    stop_signal = signal.SIGINT

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log, self.port = env, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.proc = subprocess.Popen(self.command(), cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=reset_signals)
        try:
            self.wait_ready(time.monotonic() + 180)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text()[-n:]
        except OSError:
            return ""

    def wait_answering(self, path: str, deadline: float) -> None:
        """Until GET `path` answers 200; an error if the server exits or the deadline passes."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer {path} in time:\n{self.tail()}")

    def stop(self) -> None:
        stop_group(self.proc, self.stop_signal)
        self.proc = None


class DagsterDev(LoopbackServer):
    """`dagster dev -w workspace.yaml` (webserver and daemon); ready once the code location loaded.
    Stopped by SIGINT: dagster dev then stops its webserver, daemon and code server."""

    name = "dagster dev"

    def command(self) -> list[str]:
        dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
        return [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        req = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = json.load(r)
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_ready(self, deadline: float) -> None:
        self.wait_answering("/server_info", deadline)
        query = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
                      locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        while time.monotonic() < deadline:
            entries = self.graphql(query)["workspaceOrError"].get("locationEntries") or []
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            if loaded and len(loaded) == len(entries):
                errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                if errors:
                    raise RuntimeError(f"the code location failed to load: {errors}")
                return
            time.sleep(0.5)
        raise RuntimeError(f"the code location did not load in time:\n{self.tail()}")


def stop_group(proc: subprocess.Popen | None, sig: int = signal.SIGINT, grace: float = 30) -> None:
    """`sig` to the process group `proc` leads (a server started with start_new_session), then
    SIGKILL to whatever of the group is still there after `grace` seconds."""
    if proc is None:
        return
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    for _ in range(int(grace * 2)):  # the group outlives its leader while the children shut down
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


class MlflowUi(LoopbackServer):
    """`mlflow ui` over an svd-dag home's embedded tracking store (what `make ui` starts), so that
    metadata links of runs made with SVD_DAG_MLFLOW_UI_URL = `url` open."""

    name = "mlflow ui"
    stop_signal = signal.SIGTERM

    def command(self) -> list[str]:
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        store = f"sqlite:///{os.path.join(self.env['SVD_DAG_HOME'], 'mlflow.db')}"
        return [mlflow, "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1"]

    def wait_ready(self, deadline: float) -> None:
        self.wait_answering("/health", deadline)


def _is_loopback(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("data", "blob", "about"):
        return True
    return (parsed.hostname or "") in LOOPBACK_HOSTS or (parsed.hostname or "").startswith("127.")


@contextlib.contextmanager
def open_browser():
    """A headless Chromium context (Debian's binary) that aborts every request off loopback (recorded
    in `context.blocked`) and starts with the community dialog dismissed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                                           "--disable-background-networking", "--disable-component-update"])
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            blocked: list[str] = []

            def guard(route):
                if _is_loopback(route.request.url):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            context.add_init_script(f"window.localStorage.setItem({json.dumps(NUX_STORAGE_KEY)}, {json.dumps(json.dumps('1'))});")
            context.set_default_timeout(60_000)
            context.blocked = blocked
            yield context
        finally:
            browser.close()


@contextlib.contextmanager
def explain_failure(page, dev: DagsterDev, shots: Path, name: str):
    """On any error inside, saves a screenshot of `page` and adds its path and the tail of the
    `dagster dev` log to the error, so a failure on CI says what the browser was showing."""
    try:
        yield
    except Exception as exc:
        shot = shots / f"{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            where = f"screenshot: {shot} (page {page.url})"
        except Exception as shot_exc:  # the browser itself may be what broke
            where = f"no screenshot ({shot_exc})"
        raise AssertionError(f"{exc}\n{where}\n--- dagster dev log (tail) ---\n{dev.tail(3000)}") from exc
