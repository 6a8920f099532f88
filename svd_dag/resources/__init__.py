"""Dagster resources: thin, configurable wrappers that build the plain-Python services."""

from svd_dag.resources.catalog import CatalogResource
from svd_dag.resources.executor import VideoExecutorResource
from svd_dag.resources.models import ModelStoreResource
from svd_dag.resources.storage import StorageResource

__all__ = ["CatalogResource", "ModelStoreResource", "StorageResource", "VideoExecutorResource"]
