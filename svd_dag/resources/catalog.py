"""Catalog resource: where the DuckLake catalog's metadata and Parquet tables are."""

import os
import tempfile
from typing import Optional

import dagster as dg
from pydantic import Field

from svd_dag.catalog import Catalog
from svd_dag.lake import LakeConfig, S3Access


class CatalogResource(dg.ConfigurableResource):
    """The catalog: `metadata` is `sqlite:<file>` (embedded default, `$SVD_DAG_HOME/catalog.sqlite`)
    or `postgres:<libpq dsn>` (shared by several machines); `data_uri` holds the tables' Parquet
    files (default `<storage>/catalog`, local or s3://). The Postgres password comes from
    `dg.EnvVar("SVD_DAG_CATALOG_PASSWORD")`, never from the DSN."""

    metadata: str
    data_uri: str
    password: Optional[str] = None
    scratch_dir: str = Field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "svd-dag-duckdb"))
    memory_limit: str = "1GB"

    def catalog(self) -> Catalog:
        return Catalog(LakeConfig(self.metadata, self.data_uri, password=self.password, s3=S3Access.from_env(),
                                  scratch_dir=self.scratch_dir, memory_limit=self.memory_limit))
