"""Frame annotators on Ray: a pool of actors, each holding its model, fed batches of clips.

Each actor builds its scorer once (on its GPU when it was given one: `auto` resolves in the
actor, where Ray sets CUDA_VISIBLE_DEVICES) and scores batch after batch; two batches are
queued per actor so none waits for the asset process. Results come back as they finish and
the asset process alone commits them. An actor whose process dies is restarted and its batch
re-run up to `retries` times; a batch that still fails comes back as failures of its clips.
An annotator without a model (Farneback) runs its batches as plain Ray tasks instead: the
workers already warm from the scan take them, and no actor has to start.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Iterator

from svd_dag.curation.annotate import AnnotationRun, clip_ref, failure_row, score_clips
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


_SCORERS: dict = {}  # per Ray worker process: the scorers its batch tasks built


def _score_task(spec, identity, store: Store, clips: list[dict[str, Any]]) -> AnnotationRun:
    """A batch scored as a plain Ray task (annotators without a model): any warm worker runs it."""
    import ray

    if spec not in _SCORERS:
        _SCORERS[spec] = spec.build()
    run = score_clips(store, clips, spec.which, _SCORERS[spec], identity)
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
    """A stream `batches -> (batch, AnnotationRun)` scored by a pool of Ray actors (or, for a
    spec that holds no model, by Ray tasks on whichever workers are warm: no actor to start)."""

    def stream(batches: Iterable[list[dict[str, Any]]]) -> Iterator[tuple[list[dict[str, Any]], AnnotationRun]]:
        with RayConnection(options.address) as ray:
            check_shared_storage(ray, (store.root,), options.shared_filesystem)
            size = pool_size(ray, actors, cpus_per_actor, gpus_per_actor)
            if not getattr(spec, "holds_model", True):
                task = ray.remote(_score_task).options(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
                                                       max_retries=options.retries)
                yield from _dispatch(ray, list(range(size)), lambda _, batch: task.remote(spec, identity, store, batch),
                                     iter(batches), identity.annotator, options.retries, slots_survive=True)
                return
            actor_class = ray.remote(AnnotatorActor).options(
                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, max_restarts=options.retries,
                max_task_retries=options.retries)
            pool = [actor_class.remote(spec, identity, store) for _ in range(size)]
            ray.get([a.ready.remote() for a in pool])  # a model that cannot load fails the run here, not each batch
            try:
                yield from _dispatch(ray, pool, lambda actor, batch: actor.score.remote(batch), iter(batches),
                                     identity.annotator, options.retries)
            finally:
                for actor in pool:
                    ray.kill(actor)

    return stream


def _dispatch(ray, slots: list, submit: Callable[[Any, list[dict]], Any], batches: Iterator[list[dict]],
              annotator: str, retries: int, slots_survive: bool = False):
    """Keep QUEUED_PER_ACTOR batches in flight per slot (an actor, or a task's place), yielding
    (batch, run) as they finish. A slot whose batch failed is dropped (its actor is dead),
    unless `slots_survive` (tasks)."""
    idle, running, exhausted = deque(slots * QUEUED_PER_ACTOR), {}, False
    while True:
        while idle and not exhausted:
            batch = next(batches, None)
            if batch is None:
                exhausted = True
                break
            slot = idle.popleft()
            running[submit(slot, batch)] = (slot, batch)
        if not running:
            if not exhausted:
                raise RuntimeError(f"every {annotator} actor of the Ray pool died; the clips not yet scored are "
                                   "still pending and a re-run scores them")
            return
        [ref], _ = ray.wait(list(running), num_returns=1)
        slot, batch = running.pop(ref)
        try:
            run = ray.get(ref)
            idle.append(slot)
        except Exception as e:  # noqa: BLE001 - the worker died more often than it was retried
            if slots_survive:
                idle.append(slot)
            first_line = (str(e).splitlines() or [""])[0]
            reason = f"{annotator} Ray worker lost on each of {retries + 1} attempts ({type(e).__name__}: {first_line})"
            run = AnnotationRun(failures=[failure_row(c, f"{clip_ref(c)}: {reason}") for c in batch])
        yield batch, run
