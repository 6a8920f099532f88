"""Curation group: raw videos -> clips -> annotations -> the filtered dataset `lvd_f` -> `clip_shards`.

Thin wiring: the work lives in `svd_dag.curation`. Tabular results go to the DuckDB
catalog (one table per asset); big artefacts (frame samples, manifests) go to storage and
are reported by URI. Heavy libraries (torch, open_clip, easyocr) are imported inside the
asset bodies so that loading these definitions stays fast.
"""


import dataclasses
import datetime as dt
import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from svd_dag.assets.common import md_table, png_markdown, source_version, uri_metadata
from svd_dag.catalog import Catalog
from svd_dag.resources import CatalogResource, ModelStoreResource, StorageResource, VideoExecutorResource

GROUP = "curation"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- raw_videos

def _inventory_row(store, uri: str, previous: dict) -> dict:
    from svd_dag.curation.inventory import inventory_one

    try:
        return inventory_one(store, uri, previous)
    except Exception as e:  # noqa: BLE001 - a file that vanished or cannot be read is one bad row
        return {"uri": uri, "size_bytes": 0, "modified": "", "sha256": None, "status": "quarantined",
                "reason": f"{uri}: could not be read ({type(e).__name__}: {e})"}


@dg.asset(
    group_name=GROUP,
    code_version=source_version("curation/inventory.py", "curation/media.py", "storage.py"),
    kinds={"duckdb"},
)
def raw_videos(context: dg.AssetExecutionContext, raw_storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """Inventory of every file under the raw root (SVD_DAG_RAW_URI): size, sha256, container,
    codec, fps, frame count, size and duration.

    The sha256 is the identity every clip and model downstream traces back to. Files that
    cannot be probed are listed with status `quarantined` and a reason, and copied to the
    `quarantine` table, so an auditor sees what was left out and why.
    """
    from svd_dag.curation.inventory import inventory_version, to_table

    store, cat = raw_storage.store(), catalog.catalog()
    previous = {r["uri"]: r for r in cat.rows("SELECT * FROM raw_videos")} if "raw_videos" in cat.tables() else {}
    uris = store.list_files()
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(lambda u: _inventory_row(store, u, previous), uris))
    cat.replace_table("raw_videos", to_table(rows))
    bad = [r for r in rows if r["status"] != "ok"]
    cat.quarantine([{"uri": r["uri"], "sha256": r["sha256"], "stage": "raw_videos", "reason": r["reason"]} for r in bad])
    cat.release_from_quarantine("raw_videos", [r["uri"] for r in rows if r["status"] == "ok"])
    for r in bad:
        context.log.warning(f"quarantined: {r['reason']}")
    ok = [r for r in rows if r["status"] == "ok"]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(inventory_version(rows)),
        metadata={
            "dagster/row_count": len(rows),
            "videos_ok": len(ok),
            "quarantined": len(bad),
            "total_bytes": sum(r["size_bytes"] for r in rows),
            "total_hours": round(sum(r["duration_s"] or 0 for r in ok) / 3600, 4),
            "raw_uri": uri_metadata(store.root),
            "catalog_table": f"{cat.path}::raw_videos",
            "quarantined_files": md_table([{"uri": r["uri"], "reason": r["reason"]} for r in bad]),
        },
    )


# ---------------------------------------------------------------- clips

class CutPass(dg.Config):
    name: str
    target_fps: Optional[float] = Field(description="frames per second fed to the detector; null = every frame")
    threshold: float
    detector: str = Field(default="content", description="content | adaptive | zscore (Koala-36M: a frame change more "
                                                         "than `threshold` sigmas above the last 2 s of changes)")


class ClipsConfig(dg.Config):
    passes: list[CutPass] = Field(
        default_factory=lambda: [
            CutPass(name="native", target_fps=None, threshold=27.0),
            CutPass(name="15fps", target_fps=15.0, threshold=22.0),
            CutPass(name="8fps", target_fps=8.0, threshold=17.0),
        ],
        description="SVD's cascade: native fps at the standard threshold, then lower rates at lower thresholds",
    )
    min_scene_len_s: float = 0.5
    confirm_hist_distance: float = Field(
        default=0.3, description="a cut seen only by low-fps passes must change the colour histogram this much (TV distance)"
    )
    detect_width: int = 256
    min_clip_s: float = Field(default=1.0, description="clips shorter than this are dropped and counted")
    sample_fps: float = Field(default=2.0, description="rate of the frames kept for annotators (flow is computed at it)")
    sample_width: int = 512


CLIPS_CODE = source_version("curation/cuts.py", "curation/video_scan.py", "curation/clip_pass.py", "curation/media.py")


@dg.asset(group_name=GROUP, deps=[raw_videos], code_version=CLIPS_CODE, kinds={"duckdb"})
def clips(
    context: dg.AssetExecutionContext,
    config: ClipsConfig,
    raw_storage: StorageResource,
    storage: StorageResource,
    catalog: CatalogResource,
    video_executor: VideoExecutorResource,
) -> dg.MaterializeResult:
    """Clips found by SVD's cascaded cut detection, one row per clip (a frame range of its video).

    Each video is decoded once: the native, 15-fps and 8-fps PySceneDetect passes and the
    2-fps frame samples every annotator uses all come from that decode; samples are stored
    per video and reported by URI. Clips are references into the raw video, nothing is
    transcoded. A video already scanned with the same code and settings is not decoded
    again; an unreadable one goes to `quarantine` and the rest carry on.
    """
    from svd_dag.curation.clip_pass import ClipPassTask, cascade_from_dicts, process_video, scan_key
    from svd_dag.curation.video_scan import SampleConfig

    cat = catalog.catalog()
    cascade = cascade_from_dicts(
        [p.model_dump() for p in config.passes],
        min_scene_len_s=config.min_scene_len_s,
        confirm_hist_distance=config.confirm_hist_distance,
        detect_width=config.detect_width,
    )
    sampling = SampleConfig(sample_fps=config.sample_fps, sample_width=config.sample_width)
    sampling.validate()
    if config.min_clip_s <= 0:
        raise ValueError(f"min_clip_s must be > 0, got {config.min_clip_s}")
    key = scan_key(cascade, sampling, config.min_clip_s, CLIPS_CODE)

    videos: dict[str, dict] = {}
    for r in cat.rows("SELECT uri, sha256, frame_count FROM raw_videos WHERE status = 'ok' ORDER BY uri"):
        videos.setdefault(r["sha256"], r)  # identical files are one video
    duplicates = len(cat.rows("SELECT uri FROM raw_videos WHERE status = 'ok'")) - len(videos)
    out_store = storage.store()
    done: set[str] = set()
    if "clips" in cat.tables():
        for r in cat.rows("SELECT DISTINCT video_sha256, samples_uri FROM clips WHERE scan_key = ?", [key]):
            if out_store.exists(r["samples_uri"]):
                done.add(r["video_sha256"])
    # Longest first: the pool's last minutes then run short videos, not one long one alone.
    todo = sorted((v for sha, v in videos.items() if sha not in done), key=lambda v: (-(v["frame_count"] or 0), v["uri"]))
    context.log.info(f"{len(videos)} videos: {len(done & set(videos))} already scanned with these settings, {len(todo)} to decode")

    executor = video_executor.executor()
    threads = executor.threads_per_item(len(todo))
    tasks = [
        ClipPassTask(v["uri"], v["sha256"], raw_storage.uri, storage.uri, cascade, sampling, config.min_clip_s, key,
                     raw_storage.options(), storage.options(), threads)
        for v in todo
    ]
    outcomes = executor.map(process_video, tasks)
    new_rows, scans, failed = [], [], []
    for o in outcomes:
        if o.ok:
            new_rows += o.value["clips"]
            if o.value["decode_note"]:
                context.log.info(f"{o.item.uri}: {o.value['decode_note']}")
            scans.append({"video_sha256": o.item.sha256, "uri": o.item.uri, "scan_key": key,
                          "frames_decoded": o.value["frames_decoded"], "decode_segments": o.value["decode_segments"],
                          "decode_note": o.value["decode_note"], "dropped_short": o.value["dropped_short"],
                          "boundaries": json.dumps(o.value["boundaries"]), "samples_uri": o.value["samples_uri"],
                          "scanned_at": _now()})
        else:
            failed.append({"uri": o.item.uri, "sha256": o.item.sha256, "stage": "clips", "reason": o.error})
            context.log.warning(f"quarantined: {o.error}")

    # The clips table is the current set: videos rescanned or failed lose their old rows,
    # videos no longer in the inventory drop out.
    cat.delete_where("clips", "video_sha256", [t.sha256 for t in tasks])
    if new_rows:
        cat.upsert("clips", pa.Table.from_pylist(new_rows), key=["clip_id"])
    if scans:
        cat.upsert("video_scans", pa.Table.from_pylist(scans), key=["video_sha256", "scan_key"])
    if "clips" in cat.tables():
        stale = [r["video_sha256"] for r in cat.rows("SELECT DISTINCT video_sha256 FROM clips")] 
        cat.delete_where("clips", "video_sha256", [s for s in stale if s not in videos])
    cat.quarantine(failed)
    cat.release_from_quarantine("clips", [s["uri"] for s in scans])

    current = cat.rows(
        "SELECT clip_id, duration_s, boundary_passes FROM clips ORDER BY clip_id"
    ) if "clips" in cat.tables() else []
    pass_counts: dict[str, int] = {}
    for c in current:
        for p in c["boundary_passes"]:
            pass_counts[p] = pass_counts.get(p, 0) + 1
    dropped = cat.rows("SELECT coalesce(sum(dropped_short), 0) AS n FROM video_scans WHERE scan_key = ?", [key])[0]["n"] if "video_scans" in cat.tables() else 0
    return dg.MaterializeResult(
        data_version=dg.DataVersion(_digest([key, [c["clip_id"] for c in current]])),
        metadata={
            "dagster/row_count": len(current),
            "videos": len(videos),
            "videos_decoded_this_run": len(tasks) - len(failed),
            "videos_reused": len(done & set(videos)),
            "duplicate_files": duplicates,
            "quarantined": len(failed),
            "clips_dropped_short": int(dropped),
            "min_clip_s": config.min_clip_s,
            "hours": round(sum(c["duration_s"] for c in current) / 3600, 4),
            "boundaries_by_pass": dg.MetadataValue.json(pass_counts),
            "scan_key": key,
            "samples": sampling.label(),
            "samples_root": uri_metadata(out_store.uri("samples")),
            "catalog_table": f"{cat.path}::clips",
        },
    )


# ---------------------------------------------------------------- annotators

def _on_current_samples(cat: Catalog, model_version: str) -> str:
    """A frame annotator's version on the clips' current samples: `<model>@samples=<label>`.

    Scores depend on the frames they were computed on as much as on the model, so a change
    of the sampling settings (fps, width, JPEG quality) recomputes them; a change of the cut
    cascade alone keeps the scores of every clip whose frame range did not move. All current
    clips come from one scan of the `clips` asset, so they share one label.
    """
    if "clips" not in cat.tables():
        labels = []
    elif "samples" not in cat.query("SELECT * FROM clips LIMIT 0").schema.names:
        labels = ["unrecorded"]  # clips scanned before the label existed: rescanned on the next clips run
    else:
        labels = sorted({r["samples"] or "unrecorded" for r in cat.rows("SELECT DISTINCT samples FROM clips")})
    if len(labels) > 1:
        raise RuntimeError(f"clips come from {len(labels)} sample settings ({', '.join(labels)}): materialize clips first")
    return f"{model_version}@samples={labels[0] if labels else 'none'}"


def _current_clips(cat: Catalog, table: str, model_version: str) -> tuple[list[dict], int]:
    """Clips still lacking a row from this model version (annotate once), and the total."""
    all_clips = cat.rows("SELECT * FROM clips ORDER BY clip_id")
    if table not in cat.tables():
        return all_clips, len(all_clips)
    have = {r["clip_id"] for r in cat.rows(f'SELECT clip_id FROM "{table}" WHERE model_version = ?', [model_version])}
    return [c for c in all_clips if c["clip_id"] not in have], len(all_clips)


def _record_version(cat: Catalog, annotator: str, model_version: str, weights: str, table: str) -> None:
    cat.upsert(
        "annotator_versions",
        pa.Table.from_pylist([{"annotator": annotator, "table_name": table, "model_version": model_version,
                               "weights": weights, "updated_at": _now()}]),
        key=["annotator"],
    )


def _finish_annotation(
    context: dg.AssetExecutionContext, cat: Catalog, table: str, annotator: str,
    model_version: str, weights: str, rows: list[dict], failures: list[dict], total: int,
    extra: dict[str, Any] | None = None,
) -> dg.MaterializeResult:
    if rows:
        cat.upsert(table, pa.Table.from_pylist(rows), key=["clip_id", "model_version"])
    cat.quarantine([{"uri": f["uri"], "sha256": None, "stage": table, "reason": f["reason"]} for f in failures])
    if rows:
        from svd_dag.curation.annotate import clip_ref

        scored = cat.rows("SELECT * FROM clips WHERE clip_id IN (SELECT unnest(?))", [[r["clip_id"] for r in rows]])
        cat.release_from_quarantine(table, [clip_ref(c) for c in scored])
    for f in failures:
        context.log.warning(f"quarantined: {f['reason']}")
    _record_version(cat, annotator, model_version, weights, table)
    scored = cat.rows(f'SELECT clip_id FROM "{table}" WHERE model_version = ? ORDER BY clip_id', [model_version]) if table in cat.tables() else []
    return dg.MaterializeResult(
        data_version=dg.DataVersion(_digest([model_version, [r["clip_id"] for r in scored]])),
        metadata={
            "dagster/row_count": len(scored),
            "annotator": annotator,
            "model_version": model_version,
            "weights": weights,
            "clips_total": total,
            "scored_this_run": len(rows),
            "quarantined": len(failures),
            "catalog_table": f"{cat.path}::{table}",
            **(extra or {}),
        },
    )


def _annotate_frames(
    context, cat: Catalog, storage: StorageResource, table: str, annotator: str, model_version: str,
    weights: str, which: str, score: Callable[[dict, list], dict], extra: dict | None = None, workers: int = 1,
) -> dg.MaterializeResult:
    from svd_dag.curation.annotate import annotate

    model_version = _on_current_samples(cat, model_version)
    pending, total = _current_clips(cat, table, model_version)
    run = annotate(storage.store(), pending, which, score, annotator, model_version, weights, workers=workers)
    return _finish_annotation(context, cat, table, annotator, model_version, weights, run.rows, run.failures, total, extra)


class MotionConfig(dg.Config):
    flow_width: int = Field(default=256, description="flow is computed on frames resized to this width; scores are "
                                                     "px of a 320-px-wide frame whatever it is")
    workers: int = Field(default=0, description="threads computing flow, one clip each (0: one per CPU)")


@dg.asset(group_name=GROUP, deps=[clips], code_version=source_version("curation/motion.py", "curation/annotate.py"), kinds={"duckdb", "opencv"})
def motion_scores(context: dg.AssetExecutionContext, config: MotionConfig, storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """Motion per clip: Farneback dense optical flow between consecutive 2-fps samples, mean
    magnitude over all pixels and pairs (SVD's static-scene filter), computed at
    `flow_width` pixels wide; magnitudes are pixels of a 320-px-wide frame per 0.5 s at any
    flow width (so thresholds and motion buckets keep their meaning). Also the mean
    flow direction and divergence, from which camera-motion labels are derived.
    """
    from svd_dag.curation.motion import FARNEBACK, MOTION_UNIT_WIDTH, clip_motion

    version = f"farneback-{_digest([FARNEBACK, config.flow_width])[:8]}@{config.flow_width}px-u{MOTION_UNIT_WIDTH}"
    return _annotate_frames(
        context, catalog.catalog(), storage, "motion_scores", "farneback", version, "n/a", "all",
        lambda clip, frames: clip_motion(frames, config.flow_width),
        extra={"flow_resolution": f"{config.flow_width} px wide, aspect kept; pairs 0.5 s apart (2 fps); "
                                  f"magnitudes in px of a {MOTION_UNIT_WIDTH}-px-wide frame",
               "farneback": dg.MetadataValue.json(FARNEBACK)},
        workers=config.workers,
    )


@dg.asset(group_name=GROUP, deps=[clips], code_version=source_version("curation/ocr.py", "curation/annotate.py"), kinds={"duckdb", "pytorch"})
def ocr_scores(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """Text area per clip: CRAFT text detection (easyocr's detector, real weights) on the
    first, middle and last frames; `text_area` is the largest fraction of a frame covered
    by text boxes (the paper drops clips with much text: captions, credits, watermarks).
    """
    from svd_dag.curation.ocr import get_text_detector

    detector = get_text_detector()

    def score(clip: dict, frames: list) -> dict:
        fractions = [detector.text_area_fraction(f) for f in frames]
        return {"text_area": max(fractions), "frame_text_areas": fractions}

    return _annotate_frames(context, catalog.catalog(), storage, "ocr_scores", "craft", detector.version, "pretrained", "keyframes", score,
                            extra={"ocr_resolution": "the stored samples (512 px wide by default, see clips.sample_width); "
                                                     "boxes of 20 px or less are ignored"})


class ClipEmbeddingsConfig(dg.Config):
    arch: str = Field(default="ViT-B-32", description="open_clip architecture; the paper's aesthetic head needs ViT-L-14")


@dg.asset(group_name=GROUP, deps=[clips], code_version=source_version("curation/clip_model.py", "curation/annotate.py"), kinds={"duckdb", "pytorch"})
def clip_embeddings(
    context: dg.AssetExecutionContext, config: ClipEmbeddingsConfig, storage: StorageResource,
    catalog: CatalogResource, model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """open_clip image embeddings of each clip's first, middle and last frames (L2-normalised),
    plus their normalised mean. Weights come from the model store (`clip/<arch>.*`); with
    none there, a real architecture with random init is used and every row and downstream
    score says `weights=random`.
    """
    import numpy as np

    from svd_dag.curation.clip_model import embed_images, load_clip

    model = load_clip(config.arch, model_store.model_store())
    if model.weights == "random":
        context.log.warning(f"no CLIP weights for {config.arch} in the model store: random init, scores labelled weights=random")

    def score(clip: dict, frames: list) -> dict:
        emb = embed_images(model, frames)
        mean = emb.mean(axis=0)
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return {"arch": config.arch, "embedding": mean.tolist(), "frame_embeddings": emb.tolist()}

    return _annotate_frames(
        context, catalog.catalog(), storage, "clip_embeddings", "open_clip", model.version, model.weights, "keyframes", score,
        extra={"arch": config.arch, "embed_dim": model.embed_dim},
    )


def _current_rows(cat: Catalog, table: str, annotator: str, columns: str) -> tuple[list[dict], dict]:
    """Rows of `table` from the annotator's current model version, and that version's record."""
    version = cat.rows("SELECT * FROM annotator_versions WHERE annotator = ?", [annotator])
    if not version:
        raise RuntimeError(f"{table} has not been materialized yet (no current {annotator} version)")
    rows = cat.rows(
        f'SELECT {columns} FROM "{table}" t JOIN clips c USING (clip_id) WHERE t.model_version = ? ORDER BY clip_id',
        [version[0]["model_version"]],
    )
    return rows, version[0]


def _combine_weights(*labels: str) -> str:
    return "random" if "random" in labels else "pretrained"


@dg.asset(group_name=GROUP, deps=[clip_embeddings], code_version=source_version("curation/aesthetic.py"), kinds={"duckdb", "pytorch"})
def aesthetic_scores(context: dg.AssetExecutionContext, catalog: CatalogResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """LAION aesthetic score per clip: the LAION predictor head (real weights) applied to each
    key frame's CLIP embedding, averaged. Labelled `weights=random` when the CLIP embeddings
    came from a random-init model: the head is real but its input is not.
    """
    import numpy as np

    from svd_dag.curation.aesthetic import load_aesthetic_head, random_head, score_embeddings

    cat = catalog.catalog()
    emb_rows, emb_version = _current_rows(cat, "clip_embeddings", "open_clip", "clip_id, arch, frame_embeddings")
    arch = emb_rows[0]["arch"] if emb_rows else "ViT-B-32"
    head_weights = "pretrained"
    try:
        head = load_aesthetic_head(arch, model_store.model_store())
    except FileNotFoundError as e:
        dim = len(emb_rows[0]["frame_embeddings"][0]) if emb_rows else 512
        context.log.warning(f"{e}: using a random-init head, scores labelled weights=random")
        head, head_weights = random_head(dim), "random"
    version = f"{head.version}+{emb_version['model_version']}"
    weights = _combine_weights(emb_version["weights"], head_weights)
    pending, total = _current_clips(cat, "aesthetic_scores", version)
    pending_ids = {c["clip_id"] for c in pending}
    now = _now()
    rows = []
    for r in emb_rows:
        if r["clip_id"] not in pending_ids:
            continue
        scores = score_embeddings(head, np.asarray(r["frame_embeddings"], dtype=np.float32))
        rows.append({"clip_id": r["clip_id"], "aesthetic_score": float(scores.mean()), "frame_scores": scores.tolist(),
                     "head": head.file, "annotator": "laion_aesthetic", "model_version": version, "weights": weights,
                     "annotated_at": now})
    from svd_dag.curation.annotate import clip_ref

    missing = [{"uri": clip_ref(c), "reason": f"{clip_ref(c)}: no CLIP embedding (see clip_embeddings quarantine)"}
               for c in pending if c["clip_id"] not in {r["clip_id"] for r in emb_rows}]
    return _finish_annotation(context, cat, "aesthetic_scores", "laion_aesthetic", version, weights, rows, missing, total,
                              extra={"head": head.file, "head_kind": head.kind, "head_weights": head_weights})


class CaptionsConfig(dg.Config):
    coca_arch: str = Field(default="coca_ViT-B-32", description="open_clip CoCa architecture (weights from coca/<arch>.*)")
    coca_max_tokens: int = Field(default=20, description="caption length cap; a random-init CoCa never stops early")


@dg.asset(group_name=GROUP, deps=[clips], code_version=source_version("curation/captioners.py", "curation/annotate.py"), kinds={"duckdb", "pytorch"})
def captions(
    context: dg.AssetExecutionContext, config: CaptionsConfig, storage: StorageResource,
    catalog: CatalogResource, model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """Synthetic captions per clip, one row per (clip, captioner): CoCa on the middle frame,
    the video captioner (V-BLIP) on the key frames and an LLM summary of both. Captioners
    whose weights are not in the model store are reported as not configured; no text is
    ever made up. Random-init CoCa captions are labelled `weights=random`.
    """
    from svd_dag.curation.annotate import annotate
    from svd_dag.curation.captioners import build_captioners, caption_clip

    cat, store = catalog.catalog(), storage.store()
    captioners = build_captioners(model_store.model_store(), config.coca_arch, coca_max_tokens=config.coca_max_tokens)
    ready = [c for c in captioners if c.status == "ok"]
    version = "+".join(f"{c.name}={c.version}" for c in ready) + "@" + _digest([getattr(c, "params", None) for c in ready])[:8]
    version = _on_current_samples(cat, version)
    weights = _combine_weights(*[c.weights or "" for c in ready])

    def score(clip: dict, frames: list) -> dict:
        texts = caption_clip(ready, frames)
        return {"caption": texts.get("coca"), "captions_by_model": json.dumps(texts)}

    pending, total = _current_clips(cat, "captions", version)
    run = annotate(store, pending, "keyframes", score, "captioners", version, weights)
    status = [{"captioner": c.name, "status": c.status, "weights": c.weights or "-", "version": c.version or "-",
               "detail": c.detail or ""} for c in captioners]
    return _finish_annotation(context, cat, "captions", "captioners", version, weights, run.rows, run.failures, total,
                              extra={"captioners": md_table(status)})


@dg.asset(group_name=GROUP, deps=[captions, clip_embeddings], code_version=source_version("curation/clip_model.py"), kinds={"duckdb", "pytorch"})
def caption_similarity(context: dg.AssetExecutionContext, catalog: CatalogResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """CLIP similarity between each clip's CoCa caption and its key frames: the cosine between
    the caption's text embedding and each frame embedding (same CLIP model), averaged.
    Labelled `weights=random` if the CLIP model or the captioner was random-init.
    """
    import numpy as np

    from svd_dag.curation.clip_model import embed_texts, load_clip

    cat = catalog.catalog()
    emb_rows, emb_version = _current_rows(cat, "clip_embeddings", "open_clip", "clip_id, arch, frame_embeddings")
    cap_rows, cap_version = _current_rows(cat, "captions", "captioners", "clip_id, caption")
    captions_by_clip = {r["clip_id"]: r["caption"] for r in cap_rows}
    version = f"{emb_version['model_version']}+{cap_version['model_version']}"
    weights = _combine_weights(emb_version["weights"], cap_version["weights"])
    pending, total = _current_clips(cat, "caption_similarity", version)
    pending_ids = {c["clip_id"] for c in pending}
    todo = [r for r in emb_rows if r["clip_id"] in pending_ids and captions_by_clip.get(r["clip_id"])]
    rows, now = [], _now()
    if todo:
        model = load_clip(todo[0]["arch"], model_store.model_store())
        text_emb = embed_texts(model, [captions_by_clip[r["clip_id"]] for r in todo])
        for r, t in zip(todo, text_emb):
            sims = np.asarray(r["frame_embeddings"], dtype=np.float32) @ t
            rows.append({"clip_id": r["clip_id"], "caption_similarity": float(sims.mean()), "annotator": "clip_text_image",
                         "model_version": version, "weights": weights, "annotated_at": now})
    done_ids = {r["clip_id"] for r in rows}
    from svd_dag.curation.annotate import clip_ref

    missing = [{"uri": clip_ref(c), "reason": f"{clip_ref(c)}: no caption or no CLIP embedding to compare"}
               for c in pending if c["clip_id"] not in done_ids]
    return _finish_annotation(context, cat, "caption_similarity", "clip_text_image", version, weights, rows, missing, total)


# ---------------------------------------------------------------- annotations + lvd_f

ANNOTATIONS_SQL = """
CREATE OR REPLACE TABLE annotations AS
WITH v AS (SELECT annotator, model_version FROM annotator_versions)
SELECT c.clip_id, c.video_sha256, c.video_uri, c.start_frame, c.end_frame, c.start_s, c.end_s, c.duration_s,
       c.fps, c.width, c.height, c.boundary_passes,
       m.motion_score, m.mean_dx, m.mean_dy, m.divergence,
       o.text_area,
       a.aesthetic_score, a.weights AS aesthetic_weights,
       s.caption_similarity, s.weights AS caption_similarity_weights,
       cap.caption, cap.weights AS caption_weights
FROM clips c
LEFT JOIN motion_scores m ON m.clip_id = c.clip_id AND m.model_version = (SELECT model_version FROM v WHERE annotator = 'farneback')
LEFT JOIN ocr_scores o ON o.clip_id = c.clip_id AND o.model_version = (SELECT model_version FROM v WHERE annotator = 'craft')
LEFT JOIN aesthetic_scores a ON a.clip_id = c.clip_id AND a.model_version = (SELECT model_version FROM v WHERE annotator = 'laion_aesthetic')
LEFT JOIN caption_similarity s ON s.clip_id = c.clip_id AND s.model_version = (SELECT model_version FROM v WHERE annotator = 'clip_text_image')
LEFT JOIN captions cap ON cap.clip_id = c.clip_id AND cap.model_version = (SELECT model_version FROM v WHERE annotator = 'captioners')
ORDER BY c.clip_id
"""


@dg.asset(
    group_name=GROUP,
    deps=[motion_scores, ocr_scores, aesthetic_scores, caption_similarity, captions],
    code_version=source_version("curation/stats.py", extra=ANNOTATIONS_SQL),
    kinds={"duckdb"},
)
def annotations(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """The joined per-clip view the filters run on: every clip with its current motion, text,
    aesthetic, caption-similarity scores and caption. Reports the paper's Table 1 (clips,
    hours, mean clip length) and a histogram per metric.
    """
    from svd_dag.curation.stats import HISTOGRAM_METRICS, histograms_png, table1

    cat = catalog.catalog()
    with cat.connect() as con:
        con.execute(ANNOTATIONS_SQL)
    rows = cat.rows("SELECT * FROM annotations")
    versions = cat.rows("SELECT annotator, model_version, weights FROM annotator_versions ORDER BY annotator")
    random_parts = [v["annotator"] for v in versions if v["weights"] == "random"]
    cols = {m: [r[m] for r in rows] for m in HISTOGRAM_METRICS}
    label = f"weights=random ({', '.join(random_parts)})" if random_parts else "weights=pretrained"
    png = histograms_png(cols, title_suffix=f"{len(rows)} clips; {label}")
    png_uri = storage.store().write_bytes(f"annotations/histograms-{_digest([r['clip_id'] for r in rows])}.png", png)
    stats = table1([r["duration_s"] for r in rows])
    return dg.MaterializeResult(
        data_version=dg.DataVersion(_digest([versions, [r["clip_id"] for r in rows]])),
        metadata={
            "dagster/row_count": len(rows),
            "table1_clips": stats["clips"],
            "table1_hours": round(stats["hours"], 4),
            "table1_mean_clip_s": round(stats["mean_clip_s"], 3),
            "unscored": dg.MetadataValue.json({m: sum(v is None for v in cols[m]) for m in cols}),
            "weights": label,
            "annotator_versions": md_table([{k: str(v) for k, v in r.items()} for r in versions]),
            "histograms": png_markdown(png, "histograms"),
            "histograms_uri": uri_metadata(png_uri),
            "catalog_table": f"{cat.path}::annotations",
        },
    )


def weights_label(cat: Catalog) -> str:
    """'pretrained', or 'random (<annotators>)' when any current score came from random weights."""
    random_parts = [r["annotator"] for r in cat.rows("SELECT annotator FROM annotator_versions WHERE weights = 'random'")]
    return f"random ({', '.join(random_parts)})" if random_parts else "pretrained"


def write_dataset_version(cat: Catalog, store, asset: str, version: str, kept: pa.Table, report: dict) -> str:
    """Write a dataset version: Parquet manifest + report in storage, the catalog table
    named after the asset (the current version) and a row in `dataset_versions` (history)."""
    kept = kept.replace_schema_metadata({"svd_dag.filter_report": json.dumps(report)})
    buf = io.BytesIO()
    pq.write_table(kept, buf)
    manifest_uri = store.write_bytes(f"{asset}/{version}/manifest.parquet", buf.getvalue())
    store.write_bytes(f"{asset}/{version}/filter_report.json", json.dumps(report, indent=2).encode())
    cat.replace_table(asset, kept)
    cat.upsert("dataset_versions", pa.Table.from_pylist([{
        "dataset_version": version, "asset": asset, "manifest_uri": manifest_uri, "kept": report["kept"],
        "total": report["total"], "report": json.dumps(report), "created_at": _now()}]), key=["dataset_version"])
    return manifest_uri


class LvdFConfig(dg.Config):
    motion_remove: float = Field(default=0.25, description="fraction of clips removed for lowest motion")
    aesthetics_remove: float = Field(default=0.25, description="fraction removed for lowest aesthetic score")
    caption_similarity_remove: float = Field(default=0.5, description="fraction removed for lowest caption-frame similarity")
    text_remove: float = Field(default=0.25, description="fraction removed for most text")
    text_max_area: Optional[float] = Field(default=None, description="also drop clips with more text than this (the paper: 0.07)")
    eval_fraction: float = Field(default=0.1, description="share of the kept clips held out (by a stable hash) as "
                                                         "the evaluation split that training never sees")
    eval_split_by: str = Field(default="clip", description="clip: hash each clip_id | video: hash the video's sha256, "
                                                           "so a held-out video has no clip in training (use it once "
                                                           "there are enough videos for ~eval_fraction of them)")
    eval_seed: str = Field(default="eval", description="salt of the split's hash: another value draws another "
                                                       "held-out set of the same size, stably")
    use_ablation_recommendations: bool = Field(
        default=False, description="replace the fractions above by the levels filter_ablation_report recommends "
                                   "(criteria it has no recommendation for keep the configured fraction)")

    def fractions(self) -> dict[str, float]:
        return {"motion": self.motion_remove, "aesthetics": self.aesthetics_remove,
                "caption_similarity": self.caption_similarity_remove, "text": self.text_remove}


MANIFEST_COLUMNS = ("clip_id, video_sha256, video_uri, start_frame, end_frame, start_s, end_s, duration_s, fps, "
                    "width, height, motion_score, text_area, aesthetic_score, caption_similarity, caption")


@dg.asset(
    group_name=GROUP,
    deps=[annotations],
    code_version=source_version("curation/filtering.py"),
    kinds={"duckdb", "parquet"},
    check_specs=[dg.AssetCheckSpec("keeps_clips", asset="lvd_f", blocking=True,
                                   description="fails (and blocks downstream training) when the filters keep no clip")],
)
def lvd_f(context: dg.AssetExecutionContext, config: LvdFConfig, storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    """LVD-F, the filtered dataset: clips that survive SVD's percentile filters (defaults:
    the paper's motion 25%, aesthetics 25%, caption similarity 50%, text 25%). Writes a
    versioned Parquet manifest of kept clips to storage, records every per-clip decision
    with its cutoff (`filter_decisions`), and reports thresholds, cutoffs and counts removed
    per criterion. Changing a threshold re-runs only this SQL, never a model.
    """
    from svd_dag.curation.filtering import dataset_version, percentile_filter, split_eval
    from svd_dag.curation.stats import histograms_png

    cat, store = catalog.catalog(), storage.store()
    fractions, adopted = config.fractions(), {}
    if config.use_ablation_recommendations:
        if "ablation_recommendations" not in cat.tables():
            raise ValueError("use_ablation_recommendations is set but filter_ablation_report has not run")
        adopted = {r["criterion"]: r for r in cat.rows("SELECT * FROM ablation_recommendations")}
        fractions.update({c: r["remove_fraction"] for c, r in adopted.items()})
    with cat.connect() as con:
        result = percentile_filter(con, fractions, absolute_max_text_area=config.text_max_area)
    thresholds = {"remove_fractions": fractions, "text_max_area": config.text_max_area,
                  "from_ablation": {c: f"{r['level']}% ({r['rater_kind']} votes)" for c, r in adopted.items()},
                  "eval_fraction": config.eval_fraction, "eval_split_by": config.eval_split_by,
                  "eval_seed": config.eval_seed}
    if config.eval_split_by not in ("clip", "video"):
        raise ValueError(f"eval_split_by must be clip or video, got {config.eval_split_by!r}")
    groups = None if config.eval_split_by == "clip" else {
        r["clip_id"]: r["video_sha256"] for r in cat.rows("SELECT clip_id, video_sha256 FROM annotations "
                                                          "WHERE clip_id IN (SELECT unnest(?))", [result.kept_ids])}
    train_ids, eval_ids = split_eval(result.kept_ids, config.eval_fraction, groups, seed=config.eval_seed)
    version = dataset_version(train_ids, fractions, {"text_max_area": config.text_max_area, "eval": sorted(eval_ids)})
    weights = weights_label(cat)
    select = f"SELECT {MANIFEST_COLUMNS}, ? AS dataset_version FROM annotations WHERE clip_id IN (SELECT unnest(?)) ORDER BY clip_id"
    kept = cat.query(select, [version, train_ids])
    _write_eval_split(cat, store, version, cat.query(select, [f"{version}-eval", eval_ids]))
    hist_cols = cat.query("SELECT motion_score, text_area, aesthetic_score, caption_similarity FROM annotations").to_pydict()
    report = {"dataset_version": version, "thresholds": thresholds, "cutoffs": result.cutoffs,
              "removed_by_criterion": result.removed, "unscored": result.unscored, "total": result.total,
              "kept": len(train_ids), "eval_clips": len(eval_ids), "weights": weights, "created_at": _now().isoformat()}
    manifest_uri = write_dataset_version(cat, store, "lvd_f", version, kept, report)
    decisions = [{**d, "dataset_version": version} for d in result.decisions]
    if decisions:
        cat.upsert("filter_decisions", pa.Table.from_pylist(decisions), key=["dataset_version", "clip_id", "criterion"])

    column_of = {"motion": "motion_score", "text": "text_area", "aesthetics": "aesthetic_score",
                 "caption_similarity": "caption_similarity"}
    png = histograms_png(hist_cols,
                         title_suffix=f"lvd_f {version}: cutoffs dashed; weights={weights}",
                         cutoffs={column_of[k]: v for k, v in result.cutoffs.items()})
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": len(train_ids),
            "dataset_version": version,
            "clips_in": result.total,
            "kept": len(train_ids),
            "eval_clips": len(eval_ids),
            "removed_by_criterion": dg.MetadataValue.json(result.removed),
            "unscored_by_criterion": dg.MetadataValue.json(result.unscored),
            "cutoffs": dg.MetadataValue.json(result.cutoffs),
            "thresholds": dg.MetadataValue.json(thresholds),
            "weights": weights,
            "manifest_uri": uri_metadata(manifest_uri),
            "histograms": png_markdown(png, "metrics with cutoffs"),
            "catalog_table": f"{cat.path}::lvd_f",
        },
        check_results=[dg.AssetCheckResult(
            check_name="keeps_clips", passed=len(train_ids) > 0,
            metadata={"kept": len(train_ids), "clips_in": result.total},
            description=None if train_ids else "no clip survived the filters: loosen the thresholds or add data",
        )],
    )


def _write_eval_split(cat: Catalog, store, version: str, held: pa.Table) -> str:
    """The held-out clips of an lvd_f version: `lvd_f/<version>/eval_manifest.parquet`, catalog
    table `lvd_f_eval` and a `dataset_versions` row (asset `lvd_f_eval`, same version id)."""
    buf = io.BytesIO()
    pq.write_table(held, buf)
    uri = store.write_bytes(f"lvd_f/{version}/eval_manifest.parquet", buf.getvalue())
    cat.replace_table("lvd_f_eval", held)
    cat.upsert("dataset_versions", pa.Table.from_pylist([{
        "dataset_version": f"{version}-eval", "asset": "lvd_f_eval", "manifest_uri": uri, "kept": held.num_rows,
        "total": held.num_rows, "report": json.dumps({"parent": version}), "created_at": _now()}]), key=["dataset_version"])
    return uri


def current_dataset(cat: Catalog, asset: str) -> dict:
    """The `dataset_versions` row of the version `asset`'s catalog table holds now."""
    rows = cat.rows("SELECT d.* FROM dataset_versions d JOIN (SELECT DISTINCT dataset_version FROM " + f'"{asset}"'
                    ") cur USING (dataset_version) WHERE d.asset = ?", [asset]) if asset in cat.tables() else []
    if not rows:
        raise RuntimeError(f"{asset} has no current version: materialize it first")
    return rows[0]


# ---------------------------------------------------------------- clip_shards

SHARDS_CODE = source_version("curation/shards.py", "curation/media.py")


class ClipShardsConfig(dg.Config):
    max_height: int = Field(default=576, description="frames taller than this are scaled down to it (aspect kept, even "
                                                     "sizes, never up); 576 = SVD's highest training resolution")
    crf: int = Field(default=20, description="libx264 constant rate factor: lower is better quality and bigger files")
    preset: str = Field(default="fast", description="libx264 speed preset (ultrafast ... veryslow)")
    target_shard_mb: float = Field(default=256.0, description="a shard is closed once it holds this many MB")
    max_clips_per_shard: int = Field(default=1000, description="... or this many clips")


@dg.asset(group_name=GROUP, deps=[lvd_f], code_version=SHARDS_CODE, kinds={"duckdb", "parquet"})
def clip_shards(
    context: dg.AssetExecutionContext,
    config: ClipShardsConfig,
    raw_storage: StorageResource,
    storage: StorageResource,
    catalog: CatalogResource,
    video_executor: VideoExecutorResource,
) -> dg.MaterializeResult:
    """The kept clips of the current `lvd_f`, cut out of their videos and encoded for training:
    H.264 mp4s at native fps, scaled to fit `max_height`, packed into WebDataset-style tar
    shards (`<clip_id>.mp4` + `<clip_id>.json`) under `clip_shards/<encode key>/`.

    Only what survived filtering is ever transcoded, once: a clip already encoded under the
    same encode key (settings + ENCODING_VERSION) is reused, new clips go into new shard files (shards are
    never rewritten). Each mp4's offset and size in its tar are recorded (catalog table
    `clip_shards`), so training fetches a clip with one ranged read. Writes a shard index per
    dataset version (the manifest joined with the shard references) that the training assets
    read. A clip that cannot be cut goes to `quarantine`; the rest carry on.
    """
    from svd_dag.curation.annotate import clip_ref
    from svd_dag.curation.shards import EncodeSettings, shard_clips

    cat, store = catalog.catalog(), storage.store()
    dataset = current_dataset(cat, "lvd_f")
    settings = EncodeSettings(config.max_height, config.crf, config.preset).validate()
    key = settings.key()
    kept = cat.rows("SELECT * FROM lvd_f ORDER BY clip_id")
    reused = _sharded_clips(cat, store, key)
    todo = [c for c in kept if c["clip_id"] not in reused]
    context.log.info(f"{len(kept)} clips in lvd_f {dataset['dataset_version']}: "
                     f"{len(kept) - len(todo)} already encoded under {key}, {len(todo)} to transcode")

    run = shard_clips(
        store, todo, settings, key, video_executor.executor().map, raw_storage.uri, raw_storage.options(),
        target_bytes=int(config.target_shard_mb * 2**20), max_clips=config.max_clips_per_shard,
        on_shard=lambda rows: cat.upsert("clip_shards", pa.Table.from_pylist(rows), key=["clip_id", "encode_key"]),
    )
    cat.quarantine([{"uri": clip_ref(f["clip"]), "sha256": f["clip"]["video_sha256"], "stage": "clip_shards",
                     "reason": f["reason"]} for f in run.failures])
    for f in run.failures:
        context.log.warning(f"quarantined: {f['reason']}")
    recorded, index = write_shard_index(cat, store, {**dataset, "asset": "lvd_f"}, key)
    sharded = [r for r in index.to_pylist() if r["shard_uri"] is not None]
    cat.release_from_quarantine("clip_shards", [clip_ref(r) for r in sharded])
    shard_uris = sorted({r["shard_uri"] for r in sharded})
    return dg.MaterializeResult(
        data_version=dg.DataVersion(_digest(index.to_pylist())),
        metadata={
            "dagster/row_count": len(sharded),
            "dataset_version": dataset["dataset_version"],
            "encode_key": key,
            "encode_settings": dg.MetadataValue.json(dataclasses.asdict(settings)),
            "clips_in_lvd_f": len(kept),
            "transcoded_now": len(run.rows),
            "reused": len(kept) - len(todo),
            "quarantined": len(run.failures),
            "bytes_written_now": sum(s["bytes"] for s in run.shards),
            "clip_bytes_total": sum(r["shard_size"] for r in sharded),
            "shards_written_now": dg.MetadataValue.json([s["shard_uri"] for s in run.shards]),
            "shard_uris": dg.MetadataValue.json(shard_uris),
            "index_uri": uri_metadata(recorded["index_uri"]),
            "catalog_table": f"{cat.path}::clip_shards",
            "quarantined_clips": md_table([{"clip": clip_ref(f["clip"]), "reason": f["reason"]} for f in run.failures]),
        },
    )


def _sharded_clips(cat: Catalog, store, key: str) -> set[str]:
    """Clips already encoded under `key` whose shard file is still there."""
    if "clip_shards" not in cat.tables():
        return set()
    rows = cat.rows("SELECT clip_id, shard_uri FROM clip_shards WHERE encode_key = ?", [key])
    present = {u for u in {r["shard_uri"] for r in rows} if store.exists(u)}
    return {r["clip_id"] for r in rows if r["shard_uri"] in present}


def write_shard_index(cat: Catalog, store, dataset: dict, key: str) -> tuple[dict, pa.Table]:
    """A dataset version's manifest joined with the shards of encode `key` (clips without one
    keep null shard columns and are read by reference); recorded in `shard_indexes`."""
    from svd_dag.curation.shards import shard_index

    manifest = pq.read_table(io.BytesIO(store.read_bytes(dataset["manifest_uri"])))
    refs = cat.rows("SELECT * FROM clip_shards WHERE encode_key = ? AND clip_id IN (SELECT unnest(?))",
                    [key, manifest.column("clip_id").to_pylist()]) if "clip_shards" in cat.tables() else []
    index = shard_index(manifest, refs)
    buf = io.BytesIO()
    pq.write_table(index, buf)
    uri = store.write_bytes(f"clip_shards/{key}/index/{dataset['dataset_version']}.parquet", buf.getvalue())
    row = {"dataset_version": dataset["dataset_version"], "dataset_asset": dataset["asset"], "encode_key": key,
           "index_uri": uri, "clips": index.num_rows, "sharded": len(refs), "created_at": _now()}
    cat.upsert("shard_indexes", pa.Table.from_pylist([row]), key=["dataset_version", "encode_key"])
    return row, index


def shard_index_for(cat: Catalog, store, dataset: dict) -> Optional[dict]:
    """The `shard_indexes` row for a dataset version of lvd_f clips under the latest encode key
    `clip_shards` used; for a version it did not index (hq_finetune_set, a subset of lvd_f)
    the index is written now. None when `clip_shards` has never run."""
    if "shard_indexes" not in cat.tables():
        return None
    latest = cat.rows("SELECT encode_key FROM shard_indexes WHERE dataset_asset = 'lvd_f' "
                      "ORDER BY created_at DESC LIMIT 1")
    if not latest:
        return None
    key = latest[0]["encode_key"]
    rows = cat.rows("SELECT * FROM shard_indexes WHERE dataset_version = ? AND encode_key = ?",
                    [dataset["dataset_version"], key])
    return rows[0] if rows else write_shard_index(cat, store, dataset, key)[0]


curation_assets = [raw_videos, clips, motion_scores, ocr_scores, clip_embeddings, aesthetic_scores, captions,
                   caption_similarity, annotations, lvd_f, clip_shards]
