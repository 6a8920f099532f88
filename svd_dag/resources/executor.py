"""Executor resource: where per-video work and model annotators run (a local pool or Ray).

With `backend="ray"` the Ray connection's lifecycle is dagster-ray's: its `RayResource`
(here `ray_cluster`) connects when a step that uses the executor starts and disconnects
when it ends. `LocalRay` starts a Ray on this machine; `RayClusterAddress` joins a running
cluster (a KubeRay head service, a VM cluster); dagster-ray's `KubeRayCluster` can be
swapped in to create one per run.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from svd_dag.curation.executor import VideoExecutor, make_executor


class RayClusterAddress(RayResource):
    """A Ray cluster that already runs, at `address` (`host:port` of its GCS, or `ray://host:10001`)."""

    address: str = Field(description="the cluster's address, e.g. ray://raycluster-head-svc.ray:10001")

    @property
    def host(self) -> str:
        return self.address.split("://", 1)[-1].rsplit(":", 1)[0]

    @property
    def ray_address(self) -> str:  # type: ignore[override]
        return self.address

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.address}"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True

    def connect(self, context):  # type: ignore[override]
        from svd_dag.curation.ray_executor import probe

        probe(self.address)  # ray.init would hang for minutes on an address nobody listens on
        return super().connect(context)


class VideoExecutorResource(dg.ConfigurableResource):
    """`backend`: 'local' (a process pool of `max_workers`, 0 = one per core) or 'ray'.

    Ray: each video is a task asking for `ray_cpus_per_item` CPUs, re-run up to
    `ray_retries` times when its worker or node is lost, cancelled after `ray_item_timeout_s`
    (0: never). `ray_shared_filesystem` says local storage paths are one shared mount on
    every node (otherwise a cluster of several nodes needs s3:// storage).
    """

    backend: str = "local"
    max_workers: int = 0
    ray_cluster: Optional[RayResource] = None
    ray_cpus_per_item: int = 1
    ray_retries: int = 2
    ray_item_timeout_s: float = 0.0
    ray_shared_filesystem: bool = False

    def _ray_options(self):
        from svd_dag.curation.ray_executor import RayOptions

        address = self.ray_cluster.ray_address if self.ray_cluster is not None else None
        return RayOptions(address, self.ray_cpus_per_item, self.ray_retries, self.ray_item_timeout_s,
                          self.ray_shared_filesystem)

    def executor(self, *storage_roots: str) -> VideoExecutor:
        """The executor for work that reads and writes `storage_roots`."""
        if self.backend == "ray":
            from svd_dag.curation.ray_executor import RayExecutor

            return RayExecutor(self._ray_options(), storage_roots)
        return make_executor(self.backend, self.max_workers)

    def annotator_stream(self, spec, identity, store, actors: int = 0, cpus_per_actor: float = 1.0,
                         gpus_per_actor: float = 0.0):
        """`batches -> (batch, AnnotationRun)` for a frame annotator: scored in this process
        (local) or by a pool of Ray actors (ray), each holding the model once."""
        if self.backend == "ray":
            from svd_dag.curation.ray_annotators import score_on_ray

            return score_on_ray(self._ray_options(), spec, identity, store, actors, cpus_per_actor, gpus_per_actor)
        from svd_dag.curation.annotate import score_in_process

        return score_in_process(spec, identity, store)
