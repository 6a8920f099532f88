"""Storage resource: a local folder or s3:// prefix (through s3fs)."""


from typing import Optional

import dagster as dg

from svd_dag.storage import Store


class StorageResource(dg.ConfigurableResource):
    """Where assets read or write files. `uri` is a local path or `s3://bucket/prefix`.

    S3 credentials come from the usual AWS chain (environment, profile, instance role);
    `s3_endpoint_url` points at an S3-compatible server (MinIO, a test server).
    """

    uri: str
    s3_endpoint_url: Optional[str] = None

    def options(self) -> dict:
        return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}} if self.s3_endpoint_url else {}

    def store(self) -> Store:
        return Store(self.uri, self.options())
