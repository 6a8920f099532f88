"""Curation group, per-video work: raw videos -> clips, and the kept clips -> `clip_shards`.

Thin wiring: the work lives in `svd_dag.curation`. Tabular results go to the DuckDB
catalog (one table per asset); big artefacts (frame samples, shards) go to storage and
are reported by URI. Results are committed in batches as videos finish, so a crash loses
at most the batch in flight. The annotators are in `assets/annotators.py`, the filtered
datasets in `assets/datasets.py`; they meet by asset key.
"""


import dataclasses
import json
from typing import Literal, Optional

import dagster as dg
import pyarrow as pa
from pydantic import Field

from svd_dag.assets.common import md_table, retry_transient_errors, source_version, uri_metadata
from svd_dag.catalog import Catalog, table_names, upsert_on
from svd_dag.curation.datasets import json_digest, now, relation_digest
from svd_dag.resources import CatalogResource, StorageResource, VideoExecutorResource

GROUP = "curation"


# ---------------------------------------------------------------- raw_videos

class RawVideosConfig(dg.Config):
    batch_files: int = Field(default=256, ge=1, description="files hashed and probed per committed batch: a crash "
                                                              "loses at most this many files' reading")
    threads: int = Field(default=8, ge=1, description="files read at once (I/O bound)")


@dg.asset(
    group_name=GROUP,
    code_version=source_version("curation/inventory.py", "curation/media.py", "storage.py"),
    kinds={"duckdb"},
)
@retry_transient_errors
def raw_videos(context: dg.AssetExecutionContext, config: RawVideosConfig, raw_storage: StorageResource,
               catalog: CatalogResource) -> dg.MaterializeResult:
    """Inventory of every file under the raw root (SVD_DAG_RAW_URI): size, sha256, container,
    codec, fps, frame count, size and duration.

    The sha256 is the identity every clip and model downstream traces back to. Files that
    cannot be probed are listed with status `quarantined` and a reason, and copied to the
    `quarantine` table, so an auditor sees what was left out and why. `raw_video_history`
    keeps every file's past: a file that disappears gets a tombstone, one replaced in place
    keeps its old sha256 beside the new one (the old clips stay attributed to the old bytes).
    Only new or changed files are read, and which those are comes from the listing's sizes and
    stamps joined against the previous inventory in the catalog: an unchanged file costs no
    request. What a run hashes is committed a batch at a time, so a crash loses at most the
    batch in flight.
    """
    from svd_dag.curation.inventory import take_inventory

    store, cat = raw_storage.store(), catalog.catalog()
    done = take_inventory(store, cat, config.batch_files, config.threads, context.log)
    changes, summary = done["changes"], done["summary"]
    for kind in ("replaced", "deleted"):
        if changes[kind]:
            context.log.warning(f"{changes[kind]} raw video(s) {kind} since the last inventory (raw_video_history)")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(done["version"]),
        metadata={
            "dagster/row_count": summary["rows"],
            "videos_ok": summary["ok"],
            "hashed_this_run": done["hashed"],
            "quarantined": summary["quarantined"],
            "total_bytes": summary["total_bytes"],
            "total_hours": round(summary["total_s"] / 3600, 4),
            "changes_since_last_inventory": dg.MetadataValue.json(changes),
            "raw_uri": uri_metadata(store.root),
            "catalog_table": f"{cat.path}::raw_videos",
            "quarantined_files": md_table(summary["quarantined_files"], summary["quarantined"], "quarantine"),
        },
    )


# ---------------------------------------------------------------- clips

class CutPass(dg.Config):
    name: str
    target_fps: Optional[float] = Field(description="frames per second fed to the detector; null = every frame")
    threshold: float
    detector: Literal["content", "adaptive", "zscore"] = Field(default="content", description="content | adaptive | zscore (Koala-36M: a frame change more "
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
    batch_videos: int = Field(default=8, description="scanned videos committed together; a crash loses at most one batch")


CLIPS_CODE = source_version("curation/cuts.py", "curation/video_scan.py", "curation/clip_pass.py", "curation/media.py")


@dg.asset(group_name=GROUP, deps=[raw_videos], code_version=CLIPS_CODE, kinds={"duckdb"})
@retry_transient_errors
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
    duplicates = int(cat.scalar("SELECT count(*) FROM raw_videos WHERE status = 'ok'")) - len(videos)
    out_store = storage.store()
    done: set[str] = set()
    if "clips" in cat.tables():
        for r in cat.rows("SELECT DISTINCT video_sha256, samples_uri FROM clips WHERE scan_key = ?", [key]):
            if out_store.exists(r["samples_uri"]):
                done.add(r["video_sha256"])
    # Longest first: the pool's last minutes then run short videos, not one long one alone.
    todo = sorted((v for sha, v in videos.items() if sha not in done), key=lambda v: (-(v["frame_count"] or 0), v["uri"]))
    context.log.info(f"{len(videos)} videos: {len(done & set(videos))} already scanned with these settings, {len(todo)} to decode")

    executor = video_executor.executor(raw_storage.uri, storage.uri)
    threads = executor.threads_per_item(len(todo))
    tasks = [
        ClipPassTask(v["uri"], v["sha256"], raw_storage.uri, storage.uri, cascade, sampling, config.min_clip_s, key,
                     raw_storage.options(), storage.options(), threads)
        for v in todo
    ]
    from svd_dag.curation.annotation_batches import Progress

    progress, batch, totals = Progress("clips: videos scanned", len(tasks), context.log.info), [], {"ok": 0, "failed": 0}
    for outcome in executor.imap(process_video, tasks):
        batch.append(outcome)
        if len(batch) >= max(1, config.batch_videos):
            _commit_scans(context, cat, batch, key, totals)
            progress.advance(len(batch))
            batch = []
    if batch:
        _commit_scans(context, cat, batch, key, totals)
        progress.advance(len(batch))
    # Videos no longer in the inventory drop out of the current set of clips.
    if "clips" in cat.tables():
        cat.write(lambda con: con.execute("DELETE FROM clips WHERE video_sha256 NOT IN (SELECT unnest(?))",
                                          [list(videos)]))

    cat.compact()
    with cat.connect() as con:
        n_clips, hours = con.execute("SELECT count(*), coalesce(sum(duration_s), 0) / 3600 FROM clips").fetchone() \
            if "clips" in table_names(con) else (0, 0.0)
        pass_counts = dict(con.execute("SELECT p, count(*) FROM (SELECT unnest(boundary_passes) AS p FROM clips) "
                                       "GROUP BY p ORDER BY p").fetchall()) if n_clips else {}
        clips_digest = relation_digest(con, "SELECT clip_id FROM clips")[0] if n_clips else "empty"
    dropped = cat.scalar("SELECT coalesce(sum(dropped_short), 0) FROM video_scans WHERE scan_key = ?", [key]) \
        if "video_scans" in cat.tables() else 0
    return dg.MaterializeResult(
        data_version=dg.DataVersion(json_digest([key, clips_digest])),
        metadata={
            "dagster/row_count": int(n_clips),
            "videos": len(videos),
            "videos_decoded_this_run": totals["ok"],
            "videos_reused": len(done & set(videos)),
            "duplicate_files": duplicates,
            "quarantined": totals["failed"],
            "clips_dropped_short": int(dropped),
            "min_clip_s": config.min_clip_s,
            "hours": round(float(hours), 4),
            "boundaries_by_pass": dg.MetadataValue.json(pass_counts),
            "scan_key": key,
            "samples": sampling.label(),
            "samples_root": uri_metadata(out_store.uri("samples")),
            "catalog_table": f"{cat.path}::clips",
        },
    )


def _commit_scans(context, cat: Catalog, outcomes: list, key: str, totals: dict) -> None:
    """One batch of scanned videos: their clips replace the videos' old rows, with their scan
    records, in one transaction; failures go to quarantine."""
    from svd_dag.lineage.history import remember_clips_on

    rows, scans, failed = [], [], []
    for o in outcomes:
        if not o.ok:
            failed.append({"uri": o.item.uri, "sha256": o.item.sha256, "stage": "clips", "reason": o.error})
            context.log.warning(f"quarantined: {o.error}")
            continue
        rows += o.value["clips"]
        if o.value["decode_note"]:
            context.log.info(f"{o.item.uri}: {o.value['decode_note']}")
        scans.append({"video_sha256": o.item.sha256, "uri": o.item.uri, "scan_key": key,
                      "frames_decoded": o.value["frames_decoded"], "decode_segments": o.value["decode_segments"],
                      "decode_note": o.value["decode_note"], "dropped_short": o.value["dropped_short"],
                      "boundaries": json.dumps(o.value["boundaries"]), "samples_uri": o.value["samples_uri"],
                      "worker_node": o.node, "scanned_at": now()})

    def commit(con):
        if "clips" in table_names(con):  # videos rescanned or failed lose their old rows
            con.execute("DELETE FROM clips WHERE video_sha256 IN (SELECT unnest(?))", [[o.item.sha256 for o in outcomes]])
        if rows:
            upsert_on(con, "clips", pa.Table.from_pylist(rows), key=["clip_id"])
            remember_clips_on(con, pa.Table.from_pylist(rows), now())
        if scans:
            upsert_on(con, "video_scans", pa.Table.from_pylist(scans), key=["video_sha256", "scan_key"])

    cat.write(commit)
    cat.quarantine(failed)
    cat.release_from_quarantine("clips", [s["uri"] for s in scans])
    totals["ok"] += len(scans)
    totals["failed"] += len(failed)


# ---------------------------------------------------------------- clip_shards

SHARDS_CODE = source_version("curation/shards.py", "curation/media.py")


class ClipShardsConfig(dg.Config):
    max_height: int = Field(default=576, description="frames taller than this are scaled down to it (aspect kept, even "
                                                     "sizes, never up); 576 = SVD's highest training resolution")
    crf: int = Field(default=20, description="libx264 constant rate factor: lower is better quality and bigger files")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = Field(
        default="fast", description="libx264 speed preset (ultrafast ... veryslow)")
    target_shard_mb: float = Field(default=256.0, description="a shard is closed once it holds this many MB")
    max_clips_per_shard: int = Field(default=1000, description="... or this many clips")


@dg.asset(group_name=GROUP, deps=["lvd_f"], code_version=SHARDS_CODE, kinds={"duckdb", "parquet"})
@retry_transient_errors
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
    `clip_shards`, committed per shard), so training fetches a clip with one ranged read.
    Writes a shard index per dataset version (the manifest joined with the shard references)
    that the training assets read. A clip that cannot be cut goes to `quarantine`; the rest
    carry on.
    """
    from svd_dag.curation.annotate import clip_ref
    from svd_dag.curation.annotation_batches import Progress, iter_batches
    from svd_dag.curation.datasets import current_dataset, write_shard_index
    from svd_dag.curation.shards import EncodeSettings, shard_clips

    cat, store = catalog.catalog(), storage.store()
    dataset = current_dataset(cat, "lvd_f")
    settings = EncodeSettings(config.max_height, config.crf, config.preset).validate()
    key = settings.key()
    present = _present_shards(cat, store, key)
    have = ("ANTI JOIN (SELECT clip_id FROM clip_shards WHERE encode_key = $key AND shard_uri IN (SELECT unnest($present))) s "
            "USING (clip_id)") if "clip_shards" in cat.tables() else "WHERE $key IS NOT NULL AND $present IS NOT NULL"
    kept = int(cat.scalar("SELECT count(*) FROM lvd_f"))
    written, failures, shards, failed_sample = 0, 0, [], []
    executor = video_executor.executor(raw_storage.uri, storage.uri)
    for todo, batches in iter_batches(cat, f"SELECT l.* FROM lvd_f l {have} ORDER BY l.clip_id",
                                      {"key": key, "present": present}, config.max_clips_per_shard * 4):
        context.log.info(f"{kept} clips in lvd_f {dataset['dataset_version']}: "
                         f"{kept - todo} already encoded under {key}, {todo} to transcode")
        progress = Progress("clip_shards: clips transcoded", todo, context.log.info)
        for batch in batches:
            run = shard_clips(
                store, batch, settings, key, executor.map, raw_storage.uri, raw_storage.options(),
                target_bytes=int(config.target_shard_mb * 2**20), max_clips=config.max_clips_per_shard,
                on_shard=lambda rows: cat.upsert("clip_shards", pa.Table.from_pylist(rows), key=["clip_id", "encode_key"]),
            )
            cat.quarantine([{"uri": clip_ref(f["clip"]), "sha256": f["clip"]["video_sha256"], "stage": "clip_shards",
                             "reason": f["reason"]} for f in run.failures])
            cat.release_from_quarantine("clip_shards", [clip_ref(r) for r in run.rows])
            for f in run.failures:
                context.log.warning(f"quarantined: {f['reason']}")
            written, failures, shards = written + len(run.rows), failures + len(run.failures), shards + run.shards
            failed_sample += [{"clip": clip_ref(f["clip"]), "reason": f["reason"]} for f in run.failures][:50 - len(failed_sample)]
            progress.advance(len(batch))
    cat.compact()
    recorded = write_shard_index(cat, store, {**dataset, "asset": "lvd_f"}, key)
    shard_uris = [r["shard_uri"] for r in cat.rows(
        "SELECT DISTINCT shard_uri FROM clip_shards WHERE encode_key = ? AND clip_id IN (SELECT clip_id FROM lvd_f) "
        "ORDER BY 1", [key])] if "clip_shards" in cat.tables() else []
    clip_bytes = cat.scalar("SELECT coalesce(sum(shard_size), 0) FROM clip_shards WHERE encode_key = ? AND clip_id IN "
                            "(SELECT clip_id FROM lvd_f)", [key]) if "clip_shards" in cat.tables() else 0
    return dg.MaterializeResult(
        data_version=dg.DataVersion(recorded["index_sha256"][:16]),
        metadata={
            "dagster/row_count": recorded["sharded"],
            "dataset_version": dataset["dataset_version"],
            "encode_key": key,
            "encode_settings": dg.MetadataValue.json(dataclasses.asdict(settings)),
            "clips_in_lvd_f": kept,
            "transcoded_now": written,
            "reused": kept - written - failures,
            "quarantined": failures,
            "bytes_written_now": sum(s["bytes"] for s in shards),
            "clip_bytes_total": int(clip_bytes),
            "shards_written_now": dg.MetadataValue.json([s["shard_uri"] for s in shards]),
            "shard_uris": dg.MetadataValue.json(shard_uris),
            "index_uri": uri_metadata(recorded["index_uri"]),
            "catalog_table": f"{cat.path}::clip_shards",
            "quarantined_clips": md_table(failed_sample),
        },
    )


def _present_shards(cat: Catalog, store, key: str) -> list[str]:
    """Shard files of encode `key` that are still in storage (a clip whose shard is gone is re-encoded)."""
    if "clip_shards" not in cat.tables():
        return []
    uris = [r["shard_uri"] for r in cat.rows("SELECT DISTINCT shard_uri FROM clip_shards WHERE encode_key = ?", [key])]
    return [u for u in uris if store.exists(u)]


curation_assets = [raw_videos, clips, clip_shards]
