"""Transient storage errors retry the step; other errors fail it at once.

The retry test runs `preference_votes` against an S3 endpoint where nothing listens yet: the
first attempt fails to connect, Dagster's step retry waits, the endpoint's port opens meanwhile
onto a real S3 server (moto's) with a vote file in the bucket, and the retry ingests it.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

import dagster as dg
from dagster._core.events import DagsterEventType

from conftest import _free_port, assets_job

from svd_dag.definitions import build_defs
from svd_dag.settings import load_settings
from svd_dag.transient_errors import is_transient

VOTES_CSV = ("prompt_id,model_a,model_b,winner,axis,rater_id,time\n"
             "p1,stage2_video_checkpoint,stage3_hq_checkpoint,a,visual_quality,r1,2026-12-01T10:00:00Z\n")


def _refused() -> OSError:
    """A real refused connection: a loopback port that nothing listens on."""
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", _free_port()))
        except OSError as e:
            return e
    raise AssertionError("something listens on a port just found free")


def test_connection_errors_are_transient_and_input_errors_are_not(tmp_path):
    refused = _refused()
    assert refused.errno == errno.ECONNREFUSED and is_transient(refused)
    try:
        try:
            raise refused
        except OSError as e:
            raise RuntimeError("reading s3://b/votes/x.csv failed") from e  # our wrapping keeps the cause
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    try:
        open(tmp_path / "absent.csv", "rb")
    except FileNotFoundError as missing:
        assert not is_transient(missing)
    assert not is_transient(ValueError("winner must be a, b or tie"))
    assert is_transient(TimeoutError("read timed out"))


def _job(settings):
    return assets_job(build_defs(settings), "preference_votes")


def _retries(instance, run_id: str) -> list:
    return instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)


class _Forwarder:
    """A TCP forwarder from 127.0.0.1:`port` to 127.0.0.1:`target`, listening from `start()` on:
    storage that "comes back" in the time a socket takes to bind, not a server's start-up."""

    def __init__(self, port: int, target: int):
        self.port, self.target, self.sock = port, target, None

    def start(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()


def test_a_storage_outage_is_retried_and_the_retry_succeeds(tmp_path, monkeypatch):
    """The S3 server (moto's) holds the vote file from the start, on a port of its own; the
    endpoint's port answers nothing until the step's first retry is scheduled, then forwards to
    it. Dagster waits 2 s before the retry, much longer than a socket takes to bind, so the
    retry finds storage back however slow the machine."""
    import s3fs
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server_port, port = _free_port(), _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=server_port, verbose=False)
    server.start()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://127.0.0.1:{server_port}"})
    fs.mkdir("votes-outage")
    fs.pipe_file("votes-outage/votes/batch-1.csv", VOTES_CSV.encode())
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("SVD_DAG_S3_ENDPOINT_URL", endpoint)
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_VOTES_URI": "s3://votes-outage/votes",
                              "SVD_DAG_S3_ENDPOINT_URL": endpoint})
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
    forwarder, watcher_errors = _Forwarder(port, server_port), []

    def bring_storage_back():
        """Waits for the step's first retry to be scheduled, then opens the endpoint's port."""
        try:
            watcher = dg.DagsterInstance.from_ref(instance.get_ref())
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = watcher.get_runs()
                if runs and _retries(watcher, runs[0].run_id):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("no step retry was scheduled in 120 s")
            forwarder.start()
        except BaseException as e:  # reported by the test, not lost in the thread
            watcher_errors.append(e)

    thread = threading.Thread(target=bring_storage_back, daemon=True)
    thread.start()
    try:
        result = _job(settings).execute_in_process(instance=instance, raise_on_error=False)
        thread.join(timeout=60)
    finally:
        forwarder.stop()
        server.stop()
    assert not watcher_errors, watcher_errors
    retries = _retries(instance, result.run_id)
    assert len(retries) == 1, f"{len(retries)} retries"
    assert "EndpointConnectionError" in str(retries[0].dagster_event.event_specific_data.error)
    assert result.success
    [mat] = result.asset_materializations_for_node("preference_votes")
    assert mat.metadata["files_seen"].value == 1 and mat.metadata["files_new"].value == 1


def test_a_missing_votes_folder_fails_at_once_without_retries(tmp_path):
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_VOTES_URI": str(tmp_path / "absent")})
    instance = dg.DagsterInstance.ephemeral()
    result = _job(settings).execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert _retries(instance, result.run_id) == []
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert "votes root does not exist" in str(failure.step_failure_data.error)
