"""What every checkpoint asset shares (the stages, the fine-tunes, the curation study's cells):
its config, one training launch through the launcher resource recorded as an MLflow run and a
`checkpoints` row, and the metadata it reports. The group modules wire their assets on these
and refer to each other's assets by key only.
"""

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Literal, Optional

import dagster as dg
import pyarrow as pa
from pydantic import Field

from svd_dag.assets.common import link_metadata, source_version, uri_metadata
from svd_dag.catalog import Catalog
from svd_dag.curation.datasets import shard_index_for
from svd_dag.lineage.datasheet import judge, write_documents
from svd_dag.lineage.records import record_checkpoint_clips
from svd_dag.resources import (CatalogResource, MlflowResource, ModelStoreResource, StorageResource,
                               TrainingLauncherResource)

# Bump when what a saved training state holds changes meaning (its key would then point at
# states the code cannot resume).
STATE_FORMAT = 1
TRAINING_CODE = source_version("training/train.py", "training/model_init.py", "training/export.py",
                               "training/resume_state.py", "training/clip_usage.py", "training/edm.py", "training/unets.py", "training/conditioning.py",
                               "training/data.py", "training/clip_reader.py", "training/components.py",
                               "training/config.py", "training/conditioning_frames.py", "training/finetune_models.py",
                               "training/orbits.py", "sampling/euler.py", "sampling/generate.py", "sampling/samples.py",
                               "sampling/video_io.py", "curation/media.py", "curation/shards.py")



def current_checkpoint(cat: Catalog, asset: str, variant: str = "") -> dict:
    rows = cat.rows("SELECT * FROM checkpoints WHERE asset = ? AND coalesce(variant, '') = ? "
                    "ORDER BY created_at DESC LIMIT 1", [asset, variant]) \
        if "checkpoints" in cat.tables() else []
    if not rows:
        raise RuntimeError(f"{asset} has no checkpoint yet: materialize it first")
    return rows[0]


class StageConfig(dg.Config):
    profile: Literal["tiny", "full"] = Field(default="tiny", description="tiny (CPU, minutes) | full (the paper's configuration, GPUs)")
    steps: Optional[int] = Field(default=None, description="override the profile's step count")
    batch_size: Optional[int] = Field(default=None, description="micro-batch per process (per GPU)")
    global_batch: Optional[int] = Field(default=None, description="samples per optimizer step = micro-batch x "
                                                                   "processes x gradient accumulation (derived)")
    learning_rate: Optional[float] = None
    checkpoint_every: Optional[int] = None
    dataloader_workers: Optional[int] = Field(default=None, description="clip-decoding processes per training "
                                                                         "process (full profile: 8; 0 on a small CPU)")
    seed: int = 0
    vae_fit_steps: Optional[int] = Field(default=None, description="tiny profile, stage I: steps fitting the small VAE")
    hires_phase: bool = Field(default=False, description="stage II only: then continue at 320x576 with ln sigma ~ "
                                                         "N(0.0, 1.0), SVD's hi-res phase; the asset's checkpoint is that one")
    data_source: Literal["auto", "reference", "shards"] = Field(default="auto", description="auto: lvd_f / hq_finetune_set clips from clip_shards when it has "
                                                         "run, else by reference into the raw videos | reference | shards")

    def overrides(self) -> dict:
        return {k: v for k, v in {"steps": self.steps, "batch_size": self.batch_size, "global_batch": self.global_batch,
                                  "learning_rate": self.learning_rate,
                                  "checkpoint_every": self.checkpoint_every, "seed": self.seed,
                                  "dataloader_workers": self.dataloader_workers,
                                  "vae_fit_steps": self.vae_fit_steps}.items() if v is not None}


@dataclass
class TrainedCheckpoint:
    """What one training launch left behind, as the asset layer reports it."""

    asset: str
    variant: Optional[str]
    meta: dict
    result: dg.MaterializeResult
    run_id: str
    model_id: str
    tracker: object
    dataset: dict
    parent: Optional[dict]
    verdict: object = None  # lineage.datasheet.LineageVerdict
    docs: Optional[dict] = None  # lineage_uri, datasheet_uri, datasheet (Markdown)

    @property
    def checkpoint_uri(self) -> str:
        return self.meta["checkpoint_uri"]


def train_checkpoint(context: dg.AssetExecutionContext, stage_key: str, config: StageConfig, dataset: dict,
                     parent: Optional[dict], storage: StorageResource, catalog: CatalogResource,
                     model_store: ModelStoreResource, mlflow: MlflowResource, launcher: TrainingLauncherResource,
                     variant: Optional[str] = None, extra: Optional[dict] = None) -> TrainedCheckpoint:
    """One `accelerate launch` of the training entry point for `stage_key`'s preset, tracked as one
    MLflow run (dataset as input, checkpoint as logged model) and one `checkpoints` catalog row.

    `dataset`: a `dataset_versions` row (dataset_version, manifest_uri, asset); `parent`: a
    `checkpoints` row or None; `variant`: a sub-name when one asset trains several (camera LoRAs).
    """
    from svd_dag.training.config import STAGE_PRESETS, TrainConfig

    cat, store = catalog.catalog(), storage.store()
    dataset = with_data_source(cat, store, dataset, getattr(config, "data_source", "auto"))
    if config.profile not in STAGE_PRESETS[stage_key]:
        raise ValueError(f"profile must be one of {sorted(STAGE_PRESETS[stage_key])}, got {config.profile!r}")
    preset = {**STAGE_PRESETS[stage_key][config.profile], **config.overrides(), **(extra or {})}
    probe = TrainConfig(profile=config.profile, manifest_uri="", output_uri="", state_dir="", **preset).validate()
    # Same inputs + same hyperparameters -> same state folder: a killed run resumes on re-materialization.
    # The key names what changes the training, not the source files: an edit (a comment) must
    # not restart a long run from step 0. The code is recorded with the result (code_record).
    inputs = [stage_key, variant, probe.digest(), dataset["dataset_version"], parent["data_version"] if parent else None,
              STATE_FORMAT]
    if dataset["data_source"] == "shards":  # re-encoded, downscaled frames are other training data
        inputs.append(dataset["encode_key"])
    key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:12]
    asset_name = context.asset_key.to_user_string()
    # A name usable as a path segment and as an MLflow model name (no '/', ':', '.', '%', '|').
    run_name = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{asset_name}-{variant}" if variant else asset_name)
    cfg = TrainConfig(
        profile=config.profile, manifest_uri=dataset.get("shard_index_uri") or dataset["manifest_uri"],
        output_uri=store.uri(f"checkpoints/{run_name}/{key}"),
        state_dir=os.path.join(launcher.state_root, run_name, key),
        state_uri=store.uri(f"train_state/{run_name}/{key}"),
        init_from=parent["checkpoint_uri"] if parent else None,
        models_uri=model_store.uri, storage_options=storage.options(), raw_options={},
        **preset,
    ).validate().with_processes(launcher.total_processes)
    tracker = mlflow.tracker()
    run_id = tracker.start_run(
        run_name=f"{run_name}-{key}", params={**cfg.hyperparameters(), "init_from": cfg.init_from or "",
                                             "processes": launcher.total_processes,
                                             "machines": launcher.num_machines,
                                             "dataset_version": dataset["dataset_version"],
                                             "data_source": dataset["data_source"]},
        tags={"dagster.run_id": context.run.run_id, "dagster.asset": asset_name, "svd_dag.state_key": key,
              **({"svd_dag.variant": variant} if variant else {})},
    )
    # From here on the MLflow run ends FAILED on any error (a killed training, a refused lineage,
    # a retry requested), never RUNNING; a retried step starts a run of its own.
    with tracker.failing_run(run_id):
        tracker.log_dataset(run_id, dataset["manifest_uri"], dataset["dataset_version"], dataset["asset"])
        cfg.mlflow_run_id = run_id
        # Beside the state, under the storage root: every machine of the run reads it there.
        config_uri = store.write_bytes(f"train_state/{run_name}/{key}/run.json", cfg.to_json().encode())
        result = launcher.run(context, config_uri, extras={"asset": asset_name, "state_key": key},
                              secrets={"MLFLOW_TRACKING_URI": mlflow.tracking_uri})
        meta = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
        model_id = tracker.log_checkpoint_model(run_id, run_name, meta["checkpoint_uri"], cfg.hyperparameters(),
                                                {"dataset_version": dataset["dataset_version"]})
        if parent and parent.get("mlflow_model_id"):
            tracker.log_parent_model(run_id, parent["mlflow_model_id"])
        if meta.get("samples_index"):
            tracker.log_store_files(run_id, store, _sample_files(store, meta["samples_index"]), "samples")
        version = result.data_version.value if result.data_version else None
        row = _checkpoint_row(context, asset_name, variant, key, meta, version, parent, dataset, config.profile, run_id,
                              model_id)
        row["clips_used_sha256"] = record_checkpoint_clips(cat, store, asset_name, row["variant"], version,
                                                           meta["clips_used_uri"])
        cat.upsert("checkpoints", pa.Table.from_pylist([row]), key=["asset", "variant", "data_version"])
        verdict = judge(cat, asset_name, version, row["variant"], store)
        docs = write_documents(store, meta["checkpoint_uri"], verdict)
        tracker.log_json(run_id, verdict.report, "lineage.json")
        tracker.client().log_text(run_id, docs["datasheet"], "DATASHEET.md")
        tracker.finish(run_id, {"final_loss": meta.get("final_loss"), "first_loss": meta.get("first_loss"),
                                "samples_seen": meta.get("samples_seen"), "wall_time_s": meta.get("wall_time_s"),
                                "sample_seconds_per_video": meta.get("sample_seconds_per_video")})
        return TrainedCheckpoint(asset_name, variant, meta, result, run_id, model_id, tracker, dataset, parent,
                                 verdict, docs)


def _checkpoint_row(context, asset_name: str, variant: Optional[str], key: str, meta: dict, version: str,
                    parent: Optional[dict], dataset: dict, profile: str, run_id: str, model_id: str) -> dict:
    """The `checkpoints` row: weights -> dataset version, parent, code, runs."""
    from svd_dag.lineage.code_record import code_columns

    code = json.loads(meta["code"]) if meta.get("code") else {}
    return {
        "asset": asset_name, "variant": variant or "", "state_key": key, "checkpoint_uri": meta["checkpoint_uri"],
        "data_version": version, "parent_asset": parent["asset"] if parent else None,
        "parent_checkpoint_uri": parent["checkpoint_uri"] if parent else None,
        "parent_data_version": parent["data_version"] if parent else None, "dataset_asset": dataset["asset"],
        "dataset_version": dataset["dataset_version"], "manifest_uri": dataset["manifest_uri"],
        "data_source": dataset["data_source"], "shard_index_uri": dataset.get("shard_index_uri"),
        "profile": profile, "task": meta.get("task", "text"), "steps": int(meta["steps"]),
        "mlflow_run_id": run_id, "mlflow_model_id": model_id, "dagster_run_id": context.run.run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        "code_record": meta.get("code"), **code_columns(code),
        "clips_used_uri": meta.get("clips_used_uri"), "clips_used": meta.get("clips_used"),
        "clips_skipped": meta.get("clips_skipped"), "clips_not_drawn": meta.get("clips_not_drawn"),
        "weights": _weights_note(meta),
    }


def _weights_note(meta: dict) -> str:
    return ("tiny profile: VAE fitted here on the data's frames, random-init text/image encoders; the "
            "weights are real training, not SD's latent space" if meta.get("vae_weights") == "tiny-fitted" else
            "random-init VAE/text/image encoders" if meta.get("vae_weights") == "random" else "pretrained VAE")


SHARDED_DATASETS = ("lvd_f", "hq_finetune_set")
DATA_SOURCES = ("auto", "reference", "shards")


def with_data_source(cat: Catalog, store, dataset: dict, mode: str) -> dict:
    """`dataset` plus where training reads its clips: `data_source` "shards" (and the shard
    index the trainer reads instead of the manifest) or "reference" (the raw videos)."""
    if mode not in DATA_SOURCES:
        raise ValueError(f"data_source must be one of {DATA_SOURCES}, got {mode!r}")
    index = shard_index_for(cat, store, dataset) if mode != "reference" and dataset["asset"] in SHARDED_DATASETS else None
    if mode == "shards" and (index is None or index["sharded"] < index["clips"]):
        have = "no shard index" if index is None else f"shards for {index['sharded']} of {index['clips']} clips"
        raise ValueError(f"data_source=shards but {dataset['asset']} {dataset['dataset_version']} has {have}: "
                         "materialize clip_shards (failed clips are in quarantine, stage clip_shards)")
    if index is None or index["sharded"] == 0:
        return {**dataset, "data_source": "reference"}
    return {**dataset, "data_source": "shards", "shard_index_uri": index["index_uri"], "encode_key": index["encode_key"],
            "shard_coverage": f"{index['sharded']} of {index['clips']} clips from shards"
                              + (", the rest by reference" if index["sharded"] < index["clips"] else "")}


def _sample_files(store, index_uri: str) -> list[str]:
    index = json.loads(store.read_bytes(index_uri))
    base = index_uri.rsplit("/", 2)[0]
    return [index_uri] + [f"{base}/{s[kind]}" for s in index["samples"] for kind in ("mp4", "gif")]


def sample_preview(store, meta: dict, limit: int = 2) -> dict:
    """Metadata for a fine-tune's rendered samples: their URIs and an inline GIF preview."""
    from svd_dag.sampling.video_io import preview_markdown

    if not meta.get("samples_index"):
        return {}
    index = json.loads(store.read_bytes(meta["samples_index"]))
    base = meta["samples_index"].rsplit("/", 2)[0]
    previews = [preview_markdown(store.read_bytes(f"{base}/{s['gif']}"),
                                 f"{s['name']} seed {s['seed']}: {s['conditioning']}, {s['frames']} frames, "
                                 f"{index['steps']} Euler steps, guidance {index['guidance'][0]}->{index['guidance'][1]}")
                for s in index["samples"][:limit]]
    return {"sample_videos": dg.MetadataValue.json([f"{base}/{s['mp4']}" for s in index["samples"]]),
            "sample_preview": dg.MetadataValue.md("\n\n".join(previews)),
            "samples_index": uri_metadata(meta["samples_index"])}


def checkpoint_metadata(trained: TrainedCheckpoint, profile: str, store=None) -> dict:
    meta = trained.meta
    return {
        **{k: v for k, v in (trained.result.metadata or {}).items() if k not in ("samples_index", "code")},
        "checkpoint_uri": uri_metadata(meta["checkpoint_uri"]),
        "parent_checkpoint_uri": trained.parent["checkpoint_uri"] if trained.parent else "-",
        "dataset_manifest_uri": uri_metadata(trained.dataset["manifest_uri"]),
        "dataset_version": trained.dataset["dataset_version"],
        "data_source": trained.dataset["data_source"],
        **({"shard_index_uri": uri_metadata(trained.dataset["shard_index_uri"]),
            "shard_coverage": trained.dataset["shard_coverage"]} if trained.dataset.get("shard_index_uri") else {}),
        "profile": profile,
        "mlflow_run": link_metadata(trained.tracker.run_link(trained.run_id)),
        "mlflow_model_id": trained.model_id,
        "weights": _weights_note(meta),
        "code": dg.MetadataValue.json(json.loads(meta["code"])) if meta.get("code") else "unknown",
        **({"datasheet": dg.MetadataValue.md(trained.docs["datasheet"]),
            "datasheet_uri": uri_metadata(trained.docs["datasheet_uri"]),
            "lineage_uri": uri_metadata(trained.docs["lineage_uri"])} if trained.docs else {}),
        **(sample_preview(store, meta) if store is not None else {}),
    }
