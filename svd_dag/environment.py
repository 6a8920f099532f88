"""Process-wide defaults for an offline, quiet run (no model hub, no telemetry)."""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
}

INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def apply_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def ensure_dagster_home(path: str) -> str:
    """Create the Dagster instance folder with telemetry off, unless it already has a config."""
    os.makedirs(path, exist_ok=True)
    config = os.path.join(path, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w") as f:
            f.write(INSTANCE_YAML)
    return path
