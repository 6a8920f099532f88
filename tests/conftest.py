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
