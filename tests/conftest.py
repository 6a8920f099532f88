"""Shared test setup: quiet, offline, single-threaded math (2-core machines)."""

from __future__ import annotations

import os
import sys

for key, value in {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    # Ray reads these when first imported (whoever imports it first): keep every Ray address
    # on 127.0.0.1 instead of the host's outward one, no token auth, no usage reports.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

sys.path.insert(0, os.path.dirname(__file__))  # tests/synth.py

import pytest  # noqa: E402

from svd_dag.settings import bundled_samples_dir  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_WEIGHTS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "weights")


@pytest.fixture(scope="session")
def samples_dir() -> str:
    return str(bundled_samples_dir())


@pytest.fixture(scope="session")
def bikes_path(samples_dir) -> str:
    return os.path.join(samples_dir, "bikes.mp4")


@pytest.fixture(scope="session")
def shared_weights() -> str:
    if not os.path.isdir(SHARED_WEIGHTS):
        pytest.skip("../shared/weights is not present on this machine")
    return SHARED_WEIGHTS


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 server (moto's) on 127.0.0.1 for the session; AWS variables point at it while it runs."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "SVD_DAG_S3_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      SVD_DAG_S3_ENDPOINT_URL=endpoint)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


# --- The trained lineage shared by the training and fine-tune tests (built once per session) ---

STAGES = ["stage1_image_checkpoint", "stage2_video_checkpoint", "stage3_hq_checkpoint"]
SHORT = {"steps": 4, "checkpoint_every": 2}
KEEP_ALL = {"motion_remove": 0.0, "aesthetics_remove": 0.0, "caption_similarity_remove": 0.0, "text_remove": 0.0}
# The session's lvd_f: everything kept, and 2 of its 10 clips (bikes 76-137 and fade 0-78) held
# out as the evaluation split, so FVD has N >= 2 and every camera-labelled synthetic clip trains.
# The split hashes clip ids, which hash the video files: the synthetic ones are encoded
# deterministically (tests/synth.py), and this seed is one that draws that split for them.
LVD_F_SESSION = {**KEEP_ALL, "eval_fraction": 0.4, "eval_seed": "eval-19"}


def reset_signals(*ignored: int) -> None:
    """`preexec_fn` of a server or script a test starts: SIGINT, SIGTERM and SIGQUIT at their
    defaults, then the `ignored` ones ignored. This pytest may hold them ignored: one started in
    the background by a script ignores SIGINT, and Dagster's execute_in_process gives SIGTERM
    whatever SIGINT's handler is when it returns, so after the session's first in-process run
    SIGTERM is ignored too, and a child would inherit that (a shell cannot even trap it)."""
    import signal

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(s, signal.SIG_IGN if s in ignored else signal.SIG_DFL)


def run_config(**per_asset) -> dict:
    return {"ops": {name: {"config": cfg} for name, cfg in per_asset.items()}}


def assets_job(defs, *assets: str):
    """The job that materializes just `assets` (their implicit asset job, subset to them)."""
    import dagster as dg

    keys = {dg.AssetKey(a) for a in assets}
    return defs.resolve_implicit_job_def_def_for_assets(list(keys)).get_subset(asset_selection=keys)


def meta_of(result, asset: str) -> dict:
    """The metadata of `asset`'s one materialization in a Dagster run result, as plain values."""
    [mat] = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
             if e.event_specific_data.materialization.asset_key.to_user_string() == asset]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@pytest.fixture(scope="session")
def curated(tmp_path_factory, bikes_path):
    """Real footage plus synthetic shots whose camera motion is known (static, pan, zoom)."""
    import shutil

    import dagster as dg

    import synth
    from svd_dag.catalog import Catalog
    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings

    root = tmp_path_factory.mktemp("train")
    raw = root / "raw"
    raw.mkdir()
    shutil.copy(bikes_path, raw / "bikes.mp4")
    synth.crossfade_video(str(raw / "fade.mp4"))
    synth.static_video(str(raw / "static.mp4"))
    synth.moving_video(str(raw / "pan.mp4"), speed=1.0)
    synth.zoom_video(str(raw / "zoom.mp4"))
    settings = load_settings({"SVD_DAG_HOME": str(root / "home"), "SVD_DAG_RAW_URI": str(raw),
                              "SVD_DAG_MODELS_URI": str(root / "models")})
    instance = dg.DagsterInstance.ephemeral()
    defs = build_defs(settings)
    curation = defs.resolve_job_def("recuration").execute_in_process(instance=instance, run_config=run_config(lvd_f=LVD_F_SESSION))
    assert curation.success
    cat = Catalog.from_settings(settings)
    held = cat.rows("SELECT c.video_uri, c.start_frame FROM lvd_f_eval e JOIN clips c USING (clip_id) ORDER BY 1")
    assert [(os.path.basename(r["video_uri"]), r["start_frame"]) for r in held] == [("bikes.mp4", 76), ("fade.mp4", 0)], \
        "the synthetic videos' bytes changed, so eval_seed no longer draws the split the session relies on"
    return {"settings": settings, "defs": defs, "instance": instance, "cat": cat}


@pytest.fixture(scope="session")
def trained(curated):
    result = curated["defs"].resolve_job_def("training").execute_in_process(
        instance=curated["instance"],
        run_config=run_config(hq_finetune_set=KEEP_ALL, **{s: SHORT for s in STAGES}),
    )
    assert result.success
    return result


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL (PyPI's pgserver binaries) on a unix socket for the session, stopped by its pid.

    Yields a function making a fresh database and returning its libpq DSN."""
    import signal
    import time

    import pgserver

    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg") / "pgdata"), cleanup_mode=None)
    pid, host = server.get_pid(), server.get_postmaster_info().socket_dir
    made = []

    def database() -> str:
        name = f"catalog_{len(made)}"
        server.psql(f"CREATE DATABASE {name};")
        made.append(name)
        return f"dbname={name} user=postgres host={host}"

    yield database
    os.kill(pid, signal.SIGINT)  # fast shutdown: ends the session's open connections, then exits
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, s3_endpoint):
    """A real Ray cluster on loopback: a head with no CPUs and two 1-CPU worker nodes, so every
    task runs on a worker node. Stopped through `Cluster.shutdown()` (it ends the processes it
    started, by pid), never `ray stop`.

    Ray would otherwise advertise the host's outward address (each node is given 127.0.0.1, and
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps the rest on loopback), turn token auth on and write ~/.ray (HOME and RAY_TMPDIR point at a
    temporary folder while it starts)."""
    from ray.cluster_utils import Cluster

    tmp = str(tmp_path_factory.mktemp("ray"))
    env = {"RAY_TMPDIR": tmp, "HOME": tmp}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = Cluster(initialize_head=True, shutdown_at_exit=False,
                      head_node_args={"num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    # The second worker declares one GPU (a resource count: nothing here has a real one), so
    # fractional-GPU actor placement can be shown; CUDA stays unavailable to its processes.
    workers = [cluster.add_node(num_cpus=1, num_gpus=gpus, node_ip_address="127.0.0.1") for gpus in (0, 1)]
    cluster.wait_for_nodes()
    if saved["HOME"] is not None:
        os.environ["HOME"] = saved["HOME"]
    try:
        import ray._private.services as services

        addresses = {n.address_info["node_ip_address"] for n in [cluster.head_node, *workers]}
        assert addresses == {"127.0.0.1"}, f"a Ray node left loopback: {addresses}"
        assert cluster.address.startswith("127.0.0.1:")
        # what a driver connecting to 127.0.0.1 turns it into (the host's outward address unless
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before Ray was imported)
        assert services.canonicalize_bootstrap_address(cluster.address).startswith("127.0.0.1:")
        yield {"address": cluster.address, "workers": {n.node_id for n in workers}, "head": cluster.head_node.node_id,
               "gpu_node": workers[1].node_id}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (its own store and artifact folder), started
    for the session and stopped by its process group. Yields its base URL."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=reset_signals)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.25)
        else:
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
