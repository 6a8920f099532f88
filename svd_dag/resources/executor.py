"""Executor resource: how per-video work is spread (local process pool; Ray later)."""


import dagster as dg

from svd_dag.curation.executor import VideoExecutor, make_executor


class VideoExecutorResource(dg.ConfigurableResource):
    """`backend`: 'local' (a process pool); `max_workers`: 0 means one per CPU core."""

    backend: str = "local"
    max_workers: int = 0

    def executor(self) -> VideoExecutor:
        return make_executor(self.backend, self.max_workers)
