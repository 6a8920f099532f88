"""Registry versions and aliases for the lineage report: the MLflow model registry, asked
through its REST API when the tracking server is http(s) (no `mlflow` import, which alone
costs seconds in a console command), through `MlflowClient` for a local store."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import requests

Versions = Callable[[str], list[dict[str, Any]]]  # registered model name -> [{version, tags, aliases}]
TIMEOUT_S = 10


def rest_versions(tracking_uri: str) -> Versions:
    base = tracking_uri.rstrip("/")

    def versions(name: str) -> list[dict[str, Any]]:
        reply = requests.get(f"{base}/api/2.0/mlflow/model-versions/search", params={"filter": f"name = '{name}'"},
                             timeout=TIMEOUT_S)
        if reply.status_code == 404:
            return []
        reply.raise_for_status()
        return [{"version": v["version"], "tags": {t["key"]: t["value"] for t in v.get("tags", [])},
                 "aliases": list(v.get("aliases", []))} for v in reply.json().get("model_versions", [])]
    return versions


def client_versions(tracking_uri: str) -> Versions:
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)

    def versions(name: str) -> list[dict[str, Any]]:
        try:
            found = client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return []
        return [{"version": v.version, "tags": dict(v.tags or {}), "aliases": list(v.aliases or [])} for v in found]
    return versions


def needs_mlflow_client(tracking_uri: str) -> bool:
    """A local store that exists (an absent SQLite store is not opened: that would create it)."""
    if tracking_uri.startswith(("http://", "https://")):
        return False
    return not (tracking_uri.startswith("sqlite:///") and not os.path.exists(tracking_uri.removeprefix("sqlite:///")))


def registry_for(tracking_uri: str) -> Optional[Versions]:
    """None when there is no tracking store to ask."""
    if tracking_uri.startswith(("http://", "https://")):
        return rest_versions(tracking_uri)
    return client_versions(tracking_uri) if needs_mlflow_client(tracking_uri) else None
