"""Model store resource: where CLIP / CoCa / aesthetic / captioner weights are read from."""


import dagster as dg

from svd_dag.model_store import ModelStore


class ModelStoreResource(dg.ConfigurableResource):
    """`uri`: local folder or s3:// prefix laid out as in `svd_dag/model_store.py`.

    `fallback_dir` is a read-only folder consulted after the store (the repository's
    `../shared/weights`, holding the real LAION aesthetic heads); `cache_dir` receives
    copies of remote weights.
    """

    uri: str
    cache_dir: str
    fallback_dir: str = ""

    def model_store(self) -> ModelStore:
        return ModelStore(self.uri, self.cache_dir, (self.fallback_dir,) if self.fallback_dir else ())
