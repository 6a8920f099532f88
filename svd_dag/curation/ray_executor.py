"""The Ray backend of the executor seam: per-video work as Ray tasks on a cluster.

Each item is one task that asks for the CPUs it decodes with (`cpus_per_item`); at most
as many tasks as the cluster has slots for are in flight, and outcomes come back as they
finish, so the asset commits in batches while the rest still run. A task whose worker or
node is lost is retried by Ray (`retries`); an error raised by the work itself (a
`VideoError`, a bug) is caught inside the task and comes back as that item's reason,
never retried. An item running past `item_timeout_s` is cancelled (its worker killed) and
comes back as timed out. Only the asset process writes the catalog: tasks return plain data.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from svd_dag.curation.executor import Outcome, item_name, run_one

POLL_S = 1.0  # how often a wait for outcomes wakes up to check item deadlines


class SharedStorageError(RuntimeError):
    """Workers on other machines cannot reach a storage path local to this one."""


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: the Ray this process is connected to, or a new local one
    cpus_per_item: int = 1  # CPUs each task asks for; the item decodes with as many threads
    retries: int = 2  # re-runs of an item whose worker process or node was lost
    item_timeout_s: float = 0.0  # 0: no limit; counted from when the item is handed to the cluster
    shared_filesystem: bool = False  # local paths are the same shared mount on every node


def _node_of(fn: Callable[[Any], Any], item: Any) -> tuple[Outcome, str]:
    import ray

    return run_one(fn, item), ray.get_runtime_context().get_node_id()


def probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an address nobody listens on (ray.init would hang there for minutes)."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"no Ray cluster answers at {address} ({type(e).__name__}: {e})") from e


class RayConnection:
    """`ray.init` for the duration of a `with` block, unless the process is connected already
    (by dagster-ray's resource, say): then that connection is used and left open."""

    def __init__(self, address: str | None):
        self.address, self.owned = address, False

    def __enter__(self):
        import ray

        if not ray.is_initialized():
            if self.address and self.address != "auto":
                probe(self.address)
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
            self.owned = True
        return ray

    def __exit__(self, *exc) -> None:
        if self.owned:
            import ray

            ray.shutdown()


def cluster_cpus(ray) -> int:
    return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]))


def check_shared_storage(ray, roots: Sequence[str], shared_filesystem: bool) -> None:
    """A cluster of several nodes needs storage every node reaches: s3:// (or a shared mount)."""
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    local = [r for r in roots if "://" not in r or r.startswith("file://")]
    if len(nodes) > 1 and local and not shared_filesystem:
        raise SharedStorageError(
            f"the Ray cluster has {len(nodes)} worker nodes but storage {', '.join(local)} is a local path: workers on "
            "other machines cannot read or write it. Point SVD_DAG_RAW_URI / SVD_DAG_STORAGE_URI at s3://, or set "
            "SVD_DAG_RAY_SHARED_FILESYSTEM=true if that path is one shared mount on every node")


class RayExecutor:
    """`map` / `imap` over a Ray cluster, with the local pool's contract (see executor.py)."""

    def __init__(self, options: RayOptions, storage_roots: Sequence[str] = ()):
        self.options, self.storage_roots = options, tuple(storage_roots)

    def threads_per_item(self, n_items: int) -> int:
        return max(1, self.options.cpus_per_item)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Outcome]:
        """Outcomes in the order of `items`."""
        return [o for _, o in sorted(self._indexed(fn, items), key=lambda pair: pair[0])]

    def imap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Outcome]:
        """Outcomes as items finish (started in the order given)."""
        return (o for _, o in self._indexed(fn, items))

    def _indexed(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        if not items:
            return
        with RayConnection(self.options.address) as ray:
            check_shared_storage(ray, self.storage_roots, self.options.shared_filesystem)
            cpus = max(1, self.options.cpus_per_item)
            biggest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
            if cpus > biggest:
                raise ValueError(f"each item asks for {cpus} CPUs (SVD_DAG_RAY_CPUS_PER_VIDEO) but the largest node "
                                 f"of the Ray cluster has {biggest:g}: no item could ever be scheduled")
            task = ray.remote(_node_of).options(num_cpus=cpus, max_retries=max(0, self.options.retries),
                                                retry_exceptions=False)
            slots = max(1, cluster_cpus(ray) // cpus)
            fn_ref = ray.put(fn)
            pending = list(reversed(range(len(items))))  # popped from the end: items start in the order given
            running: dict[Any, tuple[int, float]] = {}
            while pending or running:
                while pending and len(running) < slots:
                    i = pending.pop()
                    running[task.remote(fn_ref, items[i])] = (i, time.monotonic())
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in done:
                    i, _ = running.pop(ref)
                    yield i, self._collect(ray, ref, items[i])
                for i, outcome in self._expire(ray, running, items):
                    yield i, outcome

    def _collect(self, ray, ref, item: Any) -> Outcome:
        try:
            outcome, node = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - the worker or its node was lost more times than retried
            first_line = (str(e).splitlines() or [""])[0]
            return Outcome(item, error=f"{item_name(item)}Ray worker lost on each of {self.options.retries + 1} attempts "
                                       f"({type(e).__name__}: {first_line})")
        outcome.item, outcome.node = item, node  # the caller's object, not the worker's copy
        return outcome

    def _expire(self, ray, running: dict, items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        limit = self.options.item_timeout_s
        if limit <= 0:
            return
        now = time.monotonic()
        for ref, (i, started) in list(running.items()):
            if now - started > limit:
                ray.cancel(ref, force=True, recursive=True)
                del running[ref]
                yield i, Outcome(items[i], error=f"{item_name(items[i])}timed out after {limit:g} s on the Ray cluster "
                                                 "(cancelled, its worker killed)")

