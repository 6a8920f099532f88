"""Dagster resources: thin, configurable wrappers that build the plain-Python services."""

from svd_dag.resources.catalog import CatalogResource
from svd_dag.resources.executor import VideoExecutorResource
from svd_dag.resources.launcher import TrainingLauncherResource
from svd_dag.resources.lineage import OpenLineageResource
from svd_dag.resources.models import ModelStoreResource
from svd_dag.resources.storage import StorageResource
from svd_dag.resources.tracking import MlflowResource

__all__ = [
    "CatalogResource",
    "MlflowResource",
    "ModelStoreResource",
    "OpenLineageResource",
    "StorageResource",
    "TrainingLauncherResource",
    "VideoExecutorResource",
]
