"""Annotator assets (group `curation`): one table per annotator, keyed by (clip_id, model_version).

Thin wiring over `svd_dag.curation.annotation_batches` and `frame_annotators`: each asset
scores the clips that have no row under its current model version, a batch at a time
(`batch_clips`), and commits every batch, so a crash loses at most the batch in flight and
the next run does only what is missing. The frame annotators score in this process or on
Ray actors (`video_executor`), on the device their config names. Heavy libraries (torch,
open_clip, easyocr, ray) are imported inside the asset bodies.
"""

from typing import Callable, Literal

import dagster as dg
from pydantic import Field

from svd_dag.assets.common import md_table, retry_transient_errors, source_version
from svd_dag.resources import CatalogResource, ModelStoreResource, StorageResource, VideoExecutorResource

GROUP = "curation"
BATCH_CODE = ("curation/annotate.py", "curation/annotation_batches.py")


class AnnotatorConfig(dg.Config):
    batch_clips: int = Field(default=256, description="clips scored and committed together; a crash loses at most one batch")


class PlacementConfig(AnnotatorConfig):
    device: str = Field(default="auto", description="auto (CUDA when the worker sees a GPU, else CPU), cpu, cuda or "
                                                    "cuda:N; resolved where the model loads (on Ray: in each actor)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(default="auto", description="auto (bf16 on a GPU, fp32 on the CPU), fp32, fp16 or bf16")
    batch_frames: int = Field(default=32, description="frames per forward pass, across the clips of a batch")

    def placement(self):
        from svd_dag.curation.devices import Placement

        return Placement(self.device, self.dtype, self.batch_frames).validate()


class ModelAnnotatorConfig(PlacementConfig):
    ray_actors: int = Field(default=0, description="executor=ray: actors holding the model (0: as many as the "
                                                   "cluster's GPUs hold at ray_gpus_per_actor, or one per CPU)")
    ray_gpus_per_actor: float = Field(default=0.0, description="executor=ray: GPUs per actor; fractional (0.25) "
                                                               "fits several on one GPU; 0: CPU actors")
    ray_cpus_per_actor: float = Field(default=1.0, description="executor=ray: CPUs per actor (its torch threads)")


def _current_version(cat, annotator: str, table: str) -> dict:
    rows = cat.rows("SELECT * FROM annotator_versions WHERE annotator = ?", [annotator]) \
        if "annotator_versions" in cat.tables() else []
    if not rows:
        raise RuntimeError(f"{table} has not been materialized yet (no current {annotator} version)")
    return rows[0]


def _merged_weights(upstream: list[dict], own: dict | None = None) -> str:
    """The weight files behind a score built on other annotators' outputs: theirs (the
    `weights_sha256` of their `annotator_versions` rows) and its own ({name: sha256})."""
    import json

    merged: dict = {}
    for row in upstream:
        merged.update(json.loads(row["weights_sha256"]) if row.get("weights_sha256") else {})
    merged.update(own or {})
    merged = {k: v for k, v in sorted(merged.items()) if v}
    return json.dumps(merged) if merged else ""


def _combine_weights(*labels: str) -> str:
    return "random" if "random" in labels else "pretrained"


def _result(context, cat, run, table: str, annotator: str, model_version: str, weights: str,
            extra: dict | None = None, weights_sha256: str = "") -> dg.MaterializeResult:
    from svd_dag.curation.annotation_batches import record_version, table_version

    cat.compact()  # the run's per-batch commits become a few Parquet files
    version, rows = table_version(cat, table, model_version)
    placed = cat.rows(f'SELECT device, dtype, count(*) AS n FROM "{table}" WHERE model_version = ? GROUP BY ALL '
                      "ORDER BY n DESC", [model_version]) \
        if table in cat.tables() and "device" in cat.query(f'SELECT * FROM "{table}" LIMIT 0').schema.names else []
    # Which devices scored the current rows (not how many rows: that grows with every incremental run).
    devices = ", ".join(sorted({f"{p['device']}/{p['dtype']}" for p in placed})) or "n/a"
    record_version(cat, annotator, model_version, weights, table,
                   code_version=context.assets_def.code_versions_by_key.get(context.asset_key), placement=devices,
                   weights_sha256=weights_sha256)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": rows,
            "annotator": annotator,
            "model_version": model_version,
            "weights": weights,
            "clips_total": run.total,
            "scored_this_run": run.scored,
            "quarantined": run.failed,
            "batches_committed": run.batches,
            "catalog_table": f"{cat.path}::{table}",
            "placement": ", ".join(f"{p['device']}/{p['dtype']} ({p['n']} rows)" for p in placed) or "n/a",
            "ray_nodes": dg.MetadataValue.json(run.nodes),  # where this run's batches were scored
            **(extra or {}),
        },
    )


def _frame_annotator(context, cat, store, video_executor, table: str, spec, config: AnnotatorConfig,
                     finish_batch: Callable[[list[dict]], list[dict]] | None = None):
    """Score the stored frame samples of every pending clip with `spec`'s scorer, batch by
    batch: in this process, or on a pool of Ray actors (executor=ray)."""
    import dataclasses

    from svd_dag.curation.annotation_batches import on_current_samples, run_batches

    identity = spec.identity()
    identity = dataclasses.replace(identity, model_version=on_current_samples(cat, identity.model_version))
    pool = {k: getattr(config, f"ray_{k}") for k in ("actors", "cpus_per_actor", "gpus_per_actor")
            if hasattr(config, f"ray_{k}")}
    stream, nodes = video_executor.annotator_stream(spec, identity, store, **pool), set()

    def scored(batches):
        for batch, done in stream(batches):
            nodes.add(done.node)
            yield batch, (finish_batch(done.rows) if finish_batch and done.rows else done.rows), done.failures

    run = run_batches(cat, table, identity.model_version, config.batch_clips, context.log.info, score_stream=scored)
    run.nodes = sorted(n for n in nodes if n)
    return run, identity


class MotionConfig(AnnotatorConfig):
    flow_width: int = Field(default=256, description="flow is computed on frames resized to this width; scores are "
                                                     "px of a 320-px-wide frame whatever it is")
    workers: int = Field(default=0, description="threads computing flow, one clip each (0: one per CPU)")


@dg.asset(group_name=GROUP, deps=["clips"], code_version=source_version("curation/motion.py", *BATCH_CODE),
          kinds={"duckdb", "opencv"})
@retry_transient_errors
def motion_scores(context: dg.AssetExecutionContext, config: MotionConfig, storage: StorageResource,
                  catalog: CatalogResource, video_executor: VideoExecutorResource) -> dg.MaterializeResult:
    """Motion per clip: Farneback dense optical flow between consecutive 2-fps samples, mean
    magnitude over all pixels and pairs (SVD's static-scene filter), computed at
    `flow_width` pixels wide; magnitudes are pixels of a 320-px-wide frame per 0.5 s at any
    flow width (so thresholds and motion buckets keep their meaning). Also the mean
    flow direction and divergence, from which camera-motion labels are derived.
    """
    from svd_dag.curation.annotation_batches import json_digest
    from svd_dag.curation.frame_annotators import MotionSpec
    from svd_dag.curation.motion import FARNEBACK, MOTION_UNIT_WIDTH

    cat = catalog.catalog()
    version = f"farneback-{json_digest([FARNEBACK, config.flow_width])[:8]}@{config.flow_width}px-u{MOTION_UNIT_WIDTH}"
    run, who = _frame_annotator(context, cat, storage.store(), video_executor, "motion_scores",
                                MotionSpec(config.flow_width, version, config.workers), config)
    return _result(context, cat, run, "motion_scores", who.annotator, who.model_version, who.weights,
                   weights_sha256=who.weights_sha256, extra={
        "flow_resolution": f"{config.flow_width} px wide, aspect kept; pairs 0.5 s apart (2 fps); "
                           f"magnitudes in px of a {MOTION_UNIT_WIDTH}-px-wide frame",
        "farneback": dg.MetadataValue.json(FARNEBACK)})


class OcrConfig(ModelAnnotatorConfig):
    cpu_batch_frames: int = Field(default=1, description="frames per CRAFT forward pass on the CPU (1 measured "
                                                         "fastest there); batch_frames applies on a GPU")


@dg.asset(group_name=GROUP, deps=["clips"], code_version=source_version("curation/ocr.py", *BATCH_CODE),
          kinds={"duckdb", "pytorch"})
@retry_transient_errors
def ocr_scores(context: dg.AssetExecutionContext, config: OcrConfig, storage: StorageResource,
               catalog: CatalogResource, video_executor: VideoExecutorResource) -> dg.MaterializeResult:
    """Text area per clip: CRAFT text detection (easyocr's detector, real weights) on the
    first, middle and last frames, batched across clips on the configured device;
    `text_area` is the largest fraction of a frame covered by text boxes (the paper drops
    clips with much text: captions, credits, watermarks).
    """
    from svd_dag.curation.frame_annotators import CraftSpec

    cat = catalog.catalog()
    run, who = _frame_annotator(context, cat, storage.store(), video_executor, "ocr_scores",
                                CraftSpec(config.placement(), config.cpu_batch_frames), config)
    return _result(context, cat, run, "ocr_scores", who.annotator, who.model_version, who.weights,
                   weights_sha256=who.weights_sha256, extra={
        "ocr_resolution": "the stored samples (512 px wide by default, see clips.sample_width); "
                          "boxes of 20 px or less are ignored"})


class ClipEmbeddingsConfig(ModelAnnotatorConfig):
    arch: str = Field(default="ViT-B-32", description="open_clip architecture; the paper's aesthetic head needs ViT-L-14")


@dg.asset(group_name=GROUP, deps=["clips"],
          code_version=source_version("curation/clip_model.py", "curation/embedding_files.py", *BATCH_CODE),
          kinds={"duckdb", "pytorch", "parquet"})
@retry_transient_errors
def clip_embeddings(context: dg.AssetExecutionContext, config: ClipEmbeddingsConfig, storage: StorageResource,
                    catalog: CatalogResource, model_store: ModelStoreResource,
                    video_executor: VideoExecutorResource) -> dg.MaterializeResult:
    """open_clip image embeddings of each clip's first, middle and last frames (L2-normalised)
    and their normalised mean, stored as float16 in Parquet files under
    `<storage>/clip_embeddings/` (one per committed batch); the catalog table names each
    clip's file. Weights come from the model store (`clip/<arch>.*`); with none there, a real
    architecture with random init is used and every row and downstream score says
    `weights=random`.
    """
    from svd_dag.curation.annotation_batches import json_digest
    from svd_dag.curation.embedding_files import write_embedding_file
    from svd_dag.curation.frame_annotators import ClipSpec

    cat, store = catalog.catalog(), storage.store()
    spec = ClipSpec(config.arch, model_store.model_store(), config.placement())
    who = spec.identity()
    if who.weights == "random":
        context.log.warning(f"no CLIP weights for {config.arch} in the model store: random init, scores labelled weights=random")
    folder = f"clip_embeddings/{json_digest(who.model_version)}"

    def finish_batch(rows: list[dict]) -> list[dict]:
        uri = write_embedding_file(store, folder, [r["clip_id"] for r in rows], [r.pop("vectors") for r in rows])
        return [{**r, "embeddings_uri": uri} for r in rows]

    run, who = _frame_annotator(context, cat, store, video_executor, "clip_embeddings", spec, config,
                                finish_batch=finish_batch)
    return _result(context, cat, run, "clip_embeddings", who.annotator, who.model_version, who.weights,
                   weights_sha256=who.weights_sha256, extra={
        "arch": config.arch, "embed_dim": spec.embed_dim(), "storage": "float16 Parquet, one file per batch",
        "embeddings_root": store.uri(folder)})


def _embedding_work(cat, table: str, emb_version: str, select: str = "", join: str = "") -> str:
    """Pending clips of `table`, each with its current embedding file (NULL when it has none)."""
    from svd_dag.curation.annotation_batches import pending_sql

    source = ("clips c LEFT JOIN clip_embeddings e ON e.clip_id = c.clip_id AND e.model_version = $emb " + join)
    return pending_sql(table, cat.tables(), select=f"c.*, e.embeddings_uri, e.arch{select}", source=source,
                       order="e.embeddings_uri NULLS LAST, c.clip_id")


def _by_file(clips: list[dict]) -> dict[str, list[dict]]:
    files: dict[str, list[dict]] = {}
    for c in clips:
        files.setdefault(c["embeddings_uri"], []).append(c)
    return files


@dg.asset(group_name=GROUP, deps=["clip_embeddings"], code_version=source_version("curation/aesthetic.py", "curation/embedding_files.py", *BATCH_CODE),
          kinds={"duckdb", "pytorch"})
@retry_transient_errors
def aesthetic_scores(context: dg.AssetExecutionContext, config: AnnotatorConfig, storage: StorageResource,
                     catalog: CatalogResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """LAION aesthetic score per clip: the LAION predictor head (real weights) applied to each
    key frame's CLIP embedding, averaged. Labelled `weights=random` when the CLIP embeddings
    came from a random-init model: the head is real but its input is not.
    """
    from svd_dag.curation.aesthetic import load_aesthetic_head, random_head, score_embeddings
    from svd_dag.curation.annotate import clip_ref, failure_row
    from svd_dag.curation.annotation_batches import run_batches
    from svd_dag.curation.datasets import now
    from svd_dag.curation.embedding_files import read_frame_embeddings

    cat, store = catalog.catalog(), storage.store()
    emb = _current_version(cat, "open_clip", "clip_embeddings")
    first = cat.rows("SELECT arch, embed_dim FROM clip_embeddings WHERE model_version = ? LIMIT 1", [emb["model_version"]])
    arch, dim = (first[0]["arch"], first[0]["embed_dim"]) if first else ("ViT-B-32", 512)
    head_weights = "pretrained"
    try:
        head = load_aesthetic_head(arch, model_store.model_store())
    except FileNotFoundError as e:
        context.log.warning(f"{e}: using a random-init head, scores labelled weights=random")
        head, head_weights = random_head(dim), "random"
    version = f"{head.version}+{emb['model_version']}"
    weights = _combine_weights(emb["weights"], head_weights)

    def score_batch(clips: list[dict]):
        rows, failures, stamp = [], [], now()
        for uri, group in _by_file(clips).items():
            if uri is None:
                failures += [failure_row(c, f"{clip_ref(c)}: no CLIP embedding (see clip_embeddings quarantine)")
                             for c in group]
                continue
            fe = read_frame_embeddings(store, uri, [c["clip_id"] for c in group])
            frame_scores = score_embeddings(head, fe.frames)
            means = fe.per_clip_mean(frame_scores)
            rows += [{"clip_id": cid, "aesthetic_score": float(means[i]),
                      "frame_scores": frame_scores[fe.offsets[i]:fe.offsets[i + 1]].tolist(), "head": head.file,
                      "annotator": "laion_aesthetic", "model_version": version, "weights": weights, "annotated_at": stamp}
                     for i, cid in enumerate(fe.clip_ids)]
        return rows, failures

    run = run_batches(cat, "aesthetic_scores", version, config.batch_clips, context.log.info, score_batch,
                      sql=_embedding_work(cat, "aesthetic_scores", emb["model_version"]),
                      extra_params={"emb": emb["model_version"]})
    return _result(context, cat, run, "aesthetic_scores", "laion_aesthetic", version, weights,
                   extra={"head": head.file, "head_kind": head.kind, "head_weights": head_weights},
                   weights_sha256=_merged_weights([emb], {f"aesthetic/{head.file}": head.sha256}))


class CaptionsConfig(ModelAnnotatorConfig):
    coca_arch: str = Field(default="coca_ViT-B-32", description="open_clip CoCa architecture (weights from coca/<arch>.*)")
    coca_max_tokens: int = Field(default=20, description="caption length cap; a random-init CoCa never stops early")


@dg.asset(group_name=GROUP, deps=["clips"], code_version=source_version("curation/captioners.py", *BATCH_CODE),
          kinds={"duckdb", "pytorch"})
@retry_transient_errors
def captions(context: dg.AssetExecutionContext, config: CaptionsConfig, storage: StorageResource,
             catalog: CatalogResource, model_store: ModelStoreResource,
             video_executor: VideoExecutorResource) -> dg.MaterializeResult:
    """Synthetic captions per clip, one row per (clip, captioner): CoCa on the middle frame
    (batched across clips, greedy decoding), the video captioner (V-BLIP) on the key frames
    and an LLM summary of both. Captioners whose weights are not in the model store are
    reported as not configured; no text is ever made up. Random-init CoCa captions are
    labelled `weights=random`.
    """
    from svd_dag.curation.frame_annotators import CaptionSpec

    cat = catalog.catalog()
    spec = CaptionSpec(model_store.model_store(), config.coca_arch, config.coca_max_tokens, config.placement())
    run, who = _frame_annotator(context, cat, storage.store(), video_executor, "captions", spec, config)
    status = [{"captioner": c.name, "status": c.status, "weights": c.weights or "-", "version": c.version or "-",
               "detail": c.detail or ""} for c in spec.captioners()]
    return _result(context, cat, run, "captions", who.annotator, who.model_version, who.weights,
                   weights_sha256=who.weights_sha256,
                   extra={"captioners": md_table(status)})


@dg.asset(group_name=GROUP, deps=["captions", "clip_embeddings"],
          code_version=source_version("curation/clip_model.py", "curation/embedding_files.py", *BATCH_CODE),
          kinds={"duckdb", "pytorch"})
@retry_transient_errors
def caption_similarity(context: dg.AssetExecutionContext, config: PlacementConfig, storage: StorageResource,
                       catalog: CatalogResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """CLIP similarity between each clip's CoCa caption and its key frames: the cosine between
    the caption's text embedding (the text tower of the embeddings' CLIP, loaded alone) and
    each frame embedding, averaged. Labelled `weights=random` if the CLIP model or the
    captioner was random-init.
    """
    from svd_dag.curation.annotate import clip_ref, failure_row
    from svd_dag.curation.annotation_batches import run_batches
    from svd_dag.curation.clip_model import embed_texts, load_clip_text
    from svd_dag.curation.datasets import now
    from svd_dag.curation.embedding_files import read_frame_embeddings

    cat, store = catalog.catalog(), storage.store()
    emb = _current_version(cat, "open_clip", "clip_embeddings")
    cap = _current_version(cat, "captioners", "captions")
    first = cat.rows("SELECT arch FROM clip_embeddings WHERE model_version = ? LIMIT 1", [emb["model_version"]])
    # Only the text tower is loaded (the frames are already embedded): a third of the memory.
    text = load_clip_text(first[0]["arch"] if first else "ViT-B-32", model_store.model_store(),
                          placement=config.placement())
    version = f"{emb['model_version']}+{cap['model_version']}+text={text.version}"
    weights = _combine_weights(emb["weights"], cap["weights"], text.weights)

    def score_batch(clips: list[dict]):
        rows, failures, stamp = [], [], now()
        for uri, group in _by_file(clips).items():
            usable = [c for c in group if uri is not None and c["caption"]]
            failures += [failure_row(c, f"{clip_ref(c)}: no caption or no CLIP embedding to compare")
                         for c in group if c not in usable]
            if not usable:
                continue
            fe = read_frame_embeddings(store, uri, [c["clip_id"] for c in usable])
            caption_of = {c["clip_id"]: c["caption"] for c in usable}
            texts = embed_texts(text, [caption_of[cid] for cid in fe.clip_ids])
            per_frame = (fe.frames * fe.per_frame(texts)).sum(axis=1)
            sims = fe.per_clip_mean(per_frame)
            rows += [{"clip_id": cid, "caption_similarity": float(sims[i]), "annotator": "clip_text_image",
                      "model_version": version, "weights": weights, "device": text.device, "dtype": text.dtype,
                      "annotated_at": stamp}
                     for i, cid in enumerate(fe.clip_ids)]
        return rows, failures

    run = run_batches(cat, "caption_similarity", version, config.batch_clips, context.log.info, score_batch,
                      sql=_embedding_work(cat, "caption_similarity", emb["model_version"], select=", cap.caption",
                                          join="LEFT JOIN captions cap ON cap.clip_id = c.clip_id "
                                               "AND cap.model_version = $cap"),
                      extra_params={"emb": emb["model_version"], "cap": cap["model_version"]})
    return _result(context, cat, run, "caption_similarity", "clip_text_image", version, weights,
                   weights_sha256=_merged_weights([emb, cap]))


annotator_assets = [motion_scores, ocr_scores, clip_embeddings, aesthetic_scores, captions, caption_similarity]
