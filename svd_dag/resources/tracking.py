"""Tracking resource: the MLflow tracking server (or the embedded SQLite store)."""

from typing import Optional

import dagster as dg

from svd_dag.tracking import Tracker


class MlflowResource(dg.ConfigurableResource):
    """`tracking_uri`: e.g. `sqlite:///.svd_dag/mlflow.db` or `https://mlflow.example.com`;
    `artifact_location`: where the experiment's artifacts go (a folder or s3:// prefix)."""

    tracking_uri: str
    artifact_location: str
    experiment: str = "svd-dag"
    s3_endpoint_url: Optional[str] = None  # an S3-compatible endpoint for s3:// artifacts (MinIO, a test server)
    ui_url: str = ""  # an MLflow UI on a file store (make ui): metadata links point there

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.artifact_location, self.experiment, self.s3_endpoint_url or "",
                       self.ui_url)
