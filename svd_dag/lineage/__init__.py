"""Lineage for auditors: the record behind `svd-dag lineage up | down | verify`, the
per-checkpoint datasheet, and the OpenLineage export. Plain Python over the catalog and
storage (no Dagster at module level)."""
