"""Catalog resource: the DuckDB file holding one table per tabular asset."""


import dagster as dg

from svd_dag.catalog import Catalog


class CatalogResource(dg.ConfigurableResource):
    """Path of the DuckDB catalog (default `$SVD_DAG_HOME/catalog.duckdb`)."""

    path: str

    def catalog(self) -> Catalog:
        return Catalog(self.path)
