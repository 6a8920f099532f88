"""Rating campaign: `rating_tasks`, the pairs the rating page (`svd-dag rating serve`) shows.

The pair-making lives in `svd_dag.evaluation.rating_tasks`; the page itself in `svd_dag.rating`.
"""

import datetime as dt
import hashlib
import json
import math
import random

import dagster as dg
from pydantic import Field

from svd_dag.assets.common import md_table, retry_transient_errors, source_version, uri_metadata
from svd_dag.resources import CatalogResource, StorageResource

GROUP = "evaluation"
# What renders samples: the fine-tunes and the curation study's cells (the asset graph shows the edges).
SAMPLED_ASSETS = ["stage2_video_checkpoint", "stage3_hq_checkpoint", "i2v_checkpoint", "interpolation_checkpoint",
                  "multiview_checkpoint", "camera_motion_loras", "filter_ablation"]


class RatingTasksConfig(dg.Config):
    gold_fraction: float = Field(default=0.1, ge=0.0, le=1.0,
                                 description="gold pairs (a real clip against its degraded copy) per pair to rate; "
                                             "at least one when there is anything to rate and this is above 0")
    max_pairs_per_pool: int = Field(default=0, ge=0, description="a seeded random subset per pool (0: every pair)")
    seed: int = 0


@dg.asset(group_name=GROUP, deps=SAMPLED_ASSETS, kinds={"json"},
          code_version=source_version("evaluation/rating_tasks.py"))
@retry_transient_errors
def rating_tasks(context: dg.AssetExecutionContext, config: RatingTasksConfig, storage: StorageResource,
                 catalog: CatalogResource) -> dg.MaterializeResult:
    """The pairs people rate on the rating page: for every two current checkpoints (the newest
    of each asset and variant) that rendered the same sample input, one pair of their sample
    videos, pooled as the votes are rated: "main" for the fine-tunes, "ablation:<criterion>"
    for the curation study's cells. Each side names its model exactly (`asset@data_version`),
    so a vote names the model the rater saw, however many checkpoints come later. Gold pairs
    (a real reference clip against a clearly degraded copy, `gold_fraction`) are attention
    checks the admin page scores raters on. Written once per content as
    `rating_tasks/<version>/tasks.json`; `rating_tasks/latest.json` points at the newest.
    """
    from svd_dag.evaluation.rating_tasks import (LATEST_POINTER, TASKS_DIR, build_pairs, conditioning_frame_png,
                                                 degrade, gold_pair, pool_of, rendered_inputs, task_list)
    from svd_dag.sampling.video_io import decode_mp4, encode_mp4

    cat, store = catalog.catalog(), storage.store()
    current = cat.rows("SELECT * FROM checkpoints QUALIFY row_number() OVER (PARTITION BY asset, variant "
                       "ORDER BY created_at DESC) = 1 ORDER BY asset, variant") if "checkpoints" in cat.tables() else []
    by_pool, without_samples, references, weights = {}, [], {}, {}
    for row in current:
        index_uri = f"{row['checkpoint_uri']}/samples/samples.json"
        if not store.exists(index_uri):
            without_samples.append(f"{row['asset']}{':' + row['variant'] if row['variant'] else ''}")
            continue
        for s in rendered_inputs(row, json.loads(store.read_bytes(index_uri))):
            by_pool.setdefault(pool_of(row), []).append(s)
            weights[s.model] = f"{row.get('profile')}: {row.get('weights') or 'unknown'}"  # raters may see random-init models
            references.setdefault(s.input_id, s)
    pairs = build_pairs(by_pool, seed=config.seed, max_pairs_per_pool=config.max_pairs_per_pool)
    if not pairs:
        raise ValueError("nothing to rate: no two current checkpoints of one pool rendered the same sample input "
                         f"({len(current)} checkpoints, {len(without_samples)} without samples). Materialize two "
                         "fine-tunes that render samples (e.g. stage2_video_checkpoint and stage3_hq_checkpoint) or "
                         "two filter_ablation cells of one criterion first")

    def media(data: bytes, ext: str) -> str:  # content-addressed: the same bytes, one file
        return store.write_once(f"{TASKS_DIR}/media/{hashlib.sha256(data).hexdigest()[:20]}.{ext}", data)

    frames = {}  # reference clip URI -> its frames, each clip decoded once

    def clip(uri: str):
        if uri not in frames:
            frames[uri] = decode_mp4(store.read_bytes(uri))
        return frames[uri]

    for pair in pairs:
        if pair["prompt"] is None:  # image-conditioned: show the rater the frame the models were given
            reference = references[pair["prompt_id"]].reference
            pair["conditioning"] = media(conditioning_frame_png(clip(reference)), "png")
    n_gold = math.ceil(config.gold_fraction * len(pairs)) if config.gold_fraction > 0 else 0
    inputs = sorted(references)
    golds = []
    for i, input_id in enumerate(random.Random(config.seed).sample(inputs, min(n_gold, len(inputs)))):
        source = references[input_id]
        degraded = encode_mp4(degrade(clip(source.reference), seed=i), 7)
        golds.append(gold_pair(input_id, source.reference, media(degraded, "mp4"), source.prompt))
    version, body = task_list(pairs + golds, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    rel = f"{TASKS_DIR}/{version}/tasks.json"
    tasks_uri = store.uri(rel) if store.exists(rel) else store.write_once(rel, body)  # same pairs: the first list stands
    store.write_bytes(LATEST_POINTER, json.dumps({"version": version, "tasks_uri": tasks_uri}).encode())
    per_pool = {}
    for p in pairs + golds:
        per_pool[p["pool"]] = per_pool.get(p["pool"], 0) + 1
    models = sorted({p[side]["model"] for p in pairs for side in ("a", "b")})
    context.log.info(f"{len(pairs)} pairs and {len(golds)} gold pairs: a running `svd-dag rating serve` picks them up "
                     f"(or pin this list: svd-dag rating serve --tasks {tasks_uri})")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={"tasks_uri": uri_metadata(tasks_uri), "pairs": len(pairs), "gold_pairs": len(golds),
                  "pairs_per_pool": dg.MetadataValue.json(dict(sorted(per_pool.items()))),
                  "models": md_table([{"model": m, "weights": weights[m]} for m in models]),
                  "checkpoints_without_samples": ", ".join(without_samples) or "-",
                  "serve": f"svd-dag rating serve (the newest list, followed; this one alone: --tasks {tasks_uri})"},
    )


rating_assets = [rating_tasks]
