"""`make ui` (scripts/ui.sh): the Dagster UI, the MLflow UI and the rating page (here with a
task list) start on one home, on loopback, and all stop, their whole process groups, when the script
is stopped."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import psutil

import rating_fixtures
from conftest import _free_port, reset_signals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def _task_list_in(home) -> str:
    """A task list where rating_tasks would leave it (the pointer under the storage root)."""
    tasks_dir = home / "data" / "rating_tasks"
    tasks_dir.mkdir(parents=True)
    tasks = rating_fixtures.write_tasks(tasks_dir / "tasks.json", [rating_fixtures.pair("p1", home / "media")])
    (tasks_dir / "latest.json").write_text(json.dumps({"version": rating_fixtures.VERSION, "tasks_uri": str(tasks)}))
    return rating_fixtures.VERSION


def test_make_ui_serves_dagster_mlflow_and_rating_on_one_home_and_stops_all(tmp_path):
    dagster_port, mlflow_port, rating_port = _free_port(), _free_port(), _free_port()
    version = _task_list_in(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SVD_DAG_", "DAGSTER_", "MLFLOW_"))}
    env.update(SVD_DAG_HOME=str(tmp_path / "home"), DAGSTER_PORT=str(dagster_port), MLFLOW_PORT=str(mlflow_port),
               RATING_PORT=str(rating_port))
    # Started as `make ui` would be from a terminal job that ignores SIGINT (the inherited case),
    # with SIGTERM at its default whatever this pytest holds (see reset_signals).
    # Its output goes to a file, as a terminal takes it: a pipe nobody reads could block it.
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        script = subprocess.Popen(["bash", os.path.join(REPO, "scripts", "ui.sh")], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=lambda: reset_signals(signal.SIGINT))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (_answers(f"http://127.0.0.1:{dagster_port}/server_info")
                                              and _answers(f"http://127.0.0.1:{mlflow_port}/health")):
            assert script.poll() is None, log.read_text()
            time.sleep(1)
        assert _answers(f"http://127.0.0.1:{dagster_port}/server_info") and _answers(f"http://127.0.0.1:{mlflow_port}/health")
        with urllib.request.urlopen(f"http://127.0.0.1:{rating_port}/healthz", timeout=5) as r:
            assert json.load(r)["task_list"] == version  # the newest task list, found without --tasks
        assert os.path.exists(tmp_path / "home" / "mlflow.db")  # the UI serves this home's store
        served = [p for p in psutil.Process(script.pid).children(recursive=True)]
        assert any("dagster" in " ".join(p.cmdline()) for p in served)
        script.send_signal(signal.SIGTERM)
        try:
            script.wait(timeout=60)
        except subprocess.TimeoutExpired:
            left = subprocess.run(["ps", "-o", "pid,pgid,stat,etime,args", "-s", str(script.pid), "--forest"],
                                  capture_output=True, text=True).stdout
            raise AssertionError(f"ui.sh still runs 60 s after SIGTERM:\n{left}\n{log.read_text()[-3000:]}") from None
        gone_by = time.time() + 30
        while time.time() < gone_by and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in served):
            time.sleep(0.5)
        assert not [p.pid for p in served if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not _answers(f"http://127.0.0.1:{dagster_port}/server_info")
        assert not _answers(f"http://127.0.0.1:{mlflow_port}/health")
        assert not _answers(f"http://127.0.0.1:{rating_port}/healthz")
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
