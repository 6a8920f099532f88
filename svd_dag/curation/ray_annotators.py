"""Model annotators on Ray: a pool of actors, each holding its model, fed batches of clips.

Each actor builds its scorer once (on its GPU when it was given one: `auto` resolves in the
actor, where Ray sets CUDA_VISIBLE_DEVICES) and scores batch after batch; two batches are
queued per actor so none waits for the asset process. Results come back as they finish and
the asset process alone commits them. An actor whose process dies is restarted and its batch
re-run up to `retries` times; a batch that still fails comes back as failures of its clips.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Iterator

from svd_dag.curation.annotate import AnnotationRun, clip_ref, score_clips
from svd_dag.curation.ray_executor import RayConnection, RayOptions, check_shared_storage
from svd_dag.storage import Store

QUEUED_PER_ACTOR = 2


class AnnotatorActor:
    """One Ray actor: the scorer built once, then `score(clips)` batch after batch."""

    def __init__(self, spec, identity, store: Store):
        self.spec, self.identity, self.store = spec, identity, store
        self.scorer = spec.build()

    def ready(self) -> dict:
        return self.scorer.placement.label()

    def score(self, clips: list[dict[str, Any]]) -> AnnotationRun:
        import ray

        run = score_clips(self.store, clips, self.spec.which, self.scorer, self.identity)
        run.node = ray.get_runtime_context().get_node_id()
        return run


def pool_size(ray, actors: int, cpus_per_actor: float, gpus_per_actor: float) -> int:
    """`actors`, or (0) as many as the cluster's GPUs (or CPUs, for CPU actors) hold."""
    if actors > 0:
        return actors
    total = ray.cluster_resources()
    if gpus_per_actor > 0:
        return max(1, int(total.get("GPU", 0) / gpus_per_actor))
    return max(1, int(total.get("CPU", 0) / max(cpus_per_actor, 1e-9)))


def score_on_ray(options: RayOptions, spec, identity, store: Store, actors: int = 0, cpus_per_actor: float = 1.0,
                 gpus_per_actor: float = 0.0):
    """A stream `batches -> (batch, AnnotationRun)` scored by a pool of Ray actors."""

    def stream(batches: Iterable[list[dict[str, Any]]]) -> Iterator[tuple[list[dict[str, Any]], AnnotationRun]]:
        with RayConnection(options.address) as ray:
            check_shared_storage(ray, (store.root,), options.shared_filesystem)
            actor_class = ray.remote(AnnotatorActor).options(
                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, max_restarts=options.retries,
                max_task_retries=options.retries)
            pool = [actor_class.remote(spec, identity, store)
                    for _ in range(pool_size(ray, actors, cpus_per_actor, gpus_per_actor))]
            ray.get([a.ready.remote() for a in pool])  # a model that cannot load fails the run here, not each batch
            try:
                yield from _dispatch(ray, pool, iter(batches), identity.annotator, options.retries)
            finally:
                for actor in pool:
                    ray.kill(actor)

    return stream


def _dispatch(ray, pool: list, batches: Iterator[list[dict]], annotator: str, retries: int):
    idle, running, exhausted = deque(pool * QUEUED_PER_ACTOR), {}, False
    while True:
        while idle and not exhausted:
            batch = next(batches, None)
            if batch is None:
                exhausted = True
                break
            actor = idle.popleft()
            running[actor.score.remote(batch)] = (actor, batch)
        if not running:
            if not exhausted:
                raise RuntimeError(f"every {annotator} actor of the Ray pool died; the clips not yet scored are "
                                   "still pending and a re-run scores them")
            return
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor, batch = running.pop(ref)
        try:
            run = ray.get(ref)
            idle.append(actor)
        except Exception as e:  # noqa: BLE001 - the actor died more often than it was restarted
            first_line = (str(e).splitlines() or [""])[0]
            reason = f"{annotator} Ray actor lost on each of {retries + 1} attempts ({type(e).__name__}: {first_line})"
            run = AnnotationRun(failures=[{"uri": clip_ref(c), "clip_id": c["clip_id"], "reason": f"{clip_ref(c)}: {reason}"}
                                          for c in batch])
        yield batch, run
