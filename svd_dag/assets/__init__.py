"""Dagster assets, one module per group."""
