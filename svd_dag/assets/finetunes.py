"""Fine-tunes group: the end of the lineage, from the video checkpoints to the models users sample.

`stage2_video_checkpoint` -> `i2v_checkpoint` -> `interpolation_checkpoint`, `multiview_checkpoint`
(on `orbit_renders`) and `camera_motion_loras` (on `camera_motion_labels`). Every checkpoint is
one launch of the same training entry point as the stages (`svd_dag.training.train`, a `task`
in its config), ends with rendered sample videos, and is recorded like the stages: an MLflow
run with its dataset and a logged model, and rows in the catalog's `checkpoints` table.
"""

import hashlib
import json
from typing import Optional

import dagster as dg
import pyarrow as pa
from pydantic import Field

from svd_dag.assets.common import link_metadata, md_table, retry_transient_errors, source_version, uri_metadata
from svd_dag.assets.lineage_checks import lineage_check_results, lineage_check_specs
from svd_dag.assets.checkpoint_runs import (TRAINING_CODE, StageConfig, TrainedCheckpoint, checkpoint_metadata,
                                            current_checkpoint, train_checkpoint)
from svd_dag.curation.datasets import current_dataset
from svd_dag.resources import (CatalogResource, MlflowResource, ModelStoreResource, StorageResource,
                               TrainingLauncherResource)

GROUP = "finetunes"
SYNTHETIC_ORBITS = "orbits/synthetic-v1"


class FinetuneConfig(StageConfig):
    sample_count: Optional[int] = Field(default=None, description="sample videos rendered after training (fixed inputs)")
    sample_steps: Optional[int] = Field(default=None, description="Euler steps per sample video (paper: 25)")

    def overrides(self) -> dict:
        extra = {"sample_count": self.sample_count, "sample_steps": self.sample_steps}
        return {**super().overrides(), **{k: v for k, v in extra.items() if v is not None}}


class I2vConfig(FinetuneConfig):
    frames: int = Field(default=14, description="14 or 25: SVD's two image-to-video models (tiny profile: 4 or 6 frames)")


def _materialize(trained: TrainedCheckpoint, config: StageConfig, storage: StorageResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(data_version=trained.result.data_version,
                                metadata=checkpoint_metadata(trained, config.profile, storage.store()),
                                check_results=lineage_check_results([trained]))


def _finetune(context, stage_key: str, config: StageConfig, dataset_asset: str, parent_asset: str,
              storage, catalog, model_store, mlflow, launcher, extra: Optional[dict] = None) -> dg.MaterializeResult:
    cat = catalog.catalog()
    dataset = {**current_dataset(cat, dataset_asset), "asset": dataset_asset}
    trained = train_checkpoint(context, stage_key, config, dataset, current_checkpoint(cat, parent_asset), storage,
                               catalog, model_store, mlflow, launcher, extra=extra)
    return _materialize(trained, config, storage)


@dg.asset(group_name=GROUP, deps=["stage2_video_checkpoint", "hq_finetune_set", "clip_shards"], code_version=TRAINING_CODE,
          pool="gpu", kinds={"pytorch", "mlflow", "diffusers"}, check_specs=lineage_check_specs("i2v_checkpoint"))
@retry_transient_errors
def i2v_checkpoint(context: dg.AssetExecutionContext, config: I2vConfig, storage: StorageResource,
                   catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource,
                   launcher: TrainingLauncherResource) -> dg.MaterializeResult:
    """Image-to-video (SVD-I2V): stage II with the text tokens replaced by the CLIP image
    embedding of the first frame, whose noised VAE latent is concatenated to every frame
    (8 input channels), trained on the HQ set with ln sigma ~ N(0.7, 1.6) (14 frames) or
    N(1.0, 1.6) (25). Saved as a complete diffusers `StableVideoDiffusionPipeline` folder, so
    users load it with `StableVideoDiffusionPipeline.from_pretrained(<checkpoint_uri>)`.
    """
    if config.frames not in (14, 25):
        raise ValueError(f"frames must be 14 or 25 (SVD's I2V variants), got {config.frames}")
    return _finetune(context, "i2v" if config.frames == 14 else "i2v25", config, "hq_finetune_set",
                     "stage2_video_checkpoint", storage, catalog, model_store, mlflow, launcher)


@dg.asset(group_name=GROUP, deps=[i2v_checkpoint, "hq_finetune_set", "clip_shards"], code_version=TRAINING_CODE,
          pool="gpu", kinds={"pytorch", "mlflow"}, check_specs=lineage_check_specs("interpolation_checkpoint"))
@retry_transient_errors
def interpolation_checkpoint(context: dg.AssetExecutionContext, config: FinetuneConfig, storage: StorageResource,
                             catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource,
                             launcher: TrainingLauncherResource) -> dg.MaterializeResult:
    """Frame interpolation: 5 frames with the first and last given (two CLIP image tokens, two
    conditioning latents and a mask channel: 9 input channels), fine-tuned from the I2V model
    on the HQ set with ln sigma ~ N(1.0, 1.2). Samples show in-betweens of held clip ends.
    """
    return _finetune(context, "interpolation", config, "hq_finetune_set", "i2v_checkpoint", storage, catalog,
                     model_store, mlflow, launcher)


class OrbitRendersConfig(dg.Config):
    source_uri: str = Field(default="", description="folder of orbit renders (see README); empty: $SVD_DAG_ORBITS_URI, "
                                                    "else synthetic procedural orbits generated into storage")
    synthetic_objects: int = Field(default=8, description="objects generated when no source folder is given")
    synthetic_views: int = Field(default=24, description="views per synthetic orbit")
    synthetic_size: int = Field(default=64, description="synthetic render size in pixels")
    eval_fraction: float = Field(default=0.25, description="objects held out (stable hash of object_id; at least one "
                                                          "when there are 3 or more) for the multi-view metrics")


@dg.asset(group_name=GROUP, code_version=source_version("training/orbits.py"), kinds={"duckdb"})
@retry_transient_errors
def orbit_renders(context: dg.AssetExecutionContext, config: OrbitRendersConfig, storage: StorageResource,
                  catalog: CatalogResource, orbit_source: StorageResource) -> dg.MaterializeResult:
    """The multi-view training data: objects seen from cameras on an orbit, with each view's
    azimuth and elevation (cameras.json per object). The paper used Objaverse renders; point
    `source_uri` / SVD_DAG_ORBITS_URI at your own. Without one, simple procedural 3D objects
    are rendered with known cameras (real geometry, labelled `synthetic-procedural`).
    """
    from svd_dag.curation.filtering import split_eval_at_least_one
    from svd_dag.storage import Store, tree_digest
    from svd_dag.training.orbits import generate_synthetic_orbits, list_orbit_objects, read_orbit_folder

    store = storage.store()
    source = config.source_uri or orbit_source.uri  # SVD_DAG_ORBITS_URI, "" when unset
    if source:
        orbit_store = Store(source, storage.options())
    else:
        orbit_store = Store(store.uri(SYNTHETIC_ORBITS), storage.options())
        if not orbit_store.exists(orbit_store.uri("")) or not list_orbit_objects(orbit_store, ""):
            generate_synthetic_orbits(orbit_store, "", num_objects=config.synthetic_objects,
                                      num_views=config.synthetic_views, size=config.synthetic_size, seed=0)
    rows, problems, digest = [], [], hashlib.sha256()
    for uri in list_orbit_objects(orbit_store, ""):
        try:
            orbit = read_orbit_folder(orbit_store, uri)
        except ValueError as e:  # OrbitFormatError: recorded, the rest of the set still counts
            problems.append({"uri": uri, "stage": "orbit_renders", "reason": str(e)})
            continue
        folder = uri.rstrip("/").rsplit("/", 1)[-1]
        if orbit.object_id != folder:  # the held-out split names objects by id, the training data by folder
            problems.append({"uri": uri, "stage": "orbit_renders", "reason": f"{uri}: cameras.json says object_id "
                             f"{orbit.object_id!r} but the folder is {folder!r}: rename one so they agree"})
            continue
        digest.update(orbit_store.read_bytes(f"{uri}/cameras.json"))
        digest.update(hashlib.sha256(orbit.frames.tobytes()).digest())
        rows.append({"object_uri": uri, "object_id": orbit.object_id, "source": orbit.source,
                     "views": len(orbit.frames), "elevation_deg": orbit.elevation_deg,
                     "height": int(orbit.frames.shape[1]), "width": int(orbit.frames.shape[2])})
    if not rows:
        raise ValueError(f"{orbit_store.uri('')}: no readable orbit folder (see the README for the format)")
    _, held = split_eval_at_least_one([r["object_id"] for r in rows], config.eval_fraction)
    digest.update(json.dumps(sorted(held)).encode())
    version = digest.hexdigest()[:16]
    cat = catalog.catalog()
    if problems:
        cat.quarantine(problems)
    cat.replace_table("orbit_renders", pa.Table.from_pylist([
        {**r, "split": "eval" if r["object_id"] in held else "train", "dataset_version": version} for r in rows]))
    cat.upsert("dataset_versions", pa.Table.from_pylist([{
        "dataset_version": version, "asset": "orbit_renders", "manifest_uri": orbit_store.uri(""), "kept": len(rows),
        "total": len(rows) + len(problems), "report": json.dumps({"sources": sorted({r["source"] for r in rows})}),
        "created_at": _now(), "manifest_sha256": tree_digest(orbit_store, orbit_store.uri(""), "")}]),
        key=["dataset_version"])
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={"dagster/row_count": len(rows), "root_uri": uri_metadata(orbit_store.uri("")),
                  "held_out_objects": ", ".join(sorted(held)) or "-",
                  "sources": ", ".join(sorted({r["source"] for r in rows})), "rejected": len(problems),
                  "elevations_deg": dg.MetadataValue.json(sorted({r["elevation_deg"] for r in rows}))})


@dg.asset(group_name=GROUP, deps=[i2v_checkpoint, orbit_renders], code_version=TRAINING_CODE, pool="gpu",
          kinds={"pytorch", "mlflow"}, check_specs=lineage_check_specs("multiview_checkpoint"))
@retry_transient_errors
def multiview_checkpoint(context: dg.AssetExecutionContext, config: FinetuneConfig, storage: StorageResource,
                         catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource,
                         launcher: TrainingLauncherResource) -> dg.MaterializeResult:
    """Multi-view synthesis (SVD-MV): the I2V model fine-tuned on orbit renders, frames being
    views around an object, conditioned on the first view and on the camera elevation
    (sinusoidally embedded and added to the vector conditioning as a fourth micro-condition).
    The held-out objects of `orbit_renders` are never trained on (`multiview_eval` scores them).
    """
    cat = catalog.catalog()
    dataset = {**current_dataset(cat, "orbit_renders"), "asset": "orbit_renders"}
    held = [r["object_id"] for r in cat.rows("SELECT object_id FROM orbit_renders WHERE split = 'eval' ORDER BY 1")]
    trained = train_checkpoint(context, "multiview", config, dataset, current_checkpoint(cat, "i2v_checkpoint"),
                               storage, catalog, model_store, mlflow, launcher,
                               extra={"orbits_uri": dataset["manifest_uri"], "orbits_exclude": held})
    return _materialize(trained, config, storage)


class CameraLabelConfig(dg.Config):
    static_max_px: float = Field(default=0.3, description="mean flow below this (px at flow width per 0.5 s): static")
    zoom_min_px: float = Field(default=1.0, description="radial displacement at half width needed for a zoom")
    pan_min_px: float = Field(default=1.0, description="horizontal displacement needed for a pan")
    pan_axis_ratio: float = Field(default=2.0, description="|dx| must exceed this times |dy|")
    pan_coherence: float = Field(default=0.5, description="share of the motion the mean flow vector must carry")


@dg.asset(group_name=GROUP, deps=["annotations"], code_version=source_version("curation/camera_motion.py"),
          kinds={"duckdb"})
@retry_transient_errors
def camera_motion_labels(context: dg.AssetExecutionContext, config: CameraLabelConfig,
                         catalog: CatalogResource) -> dg.MaterializeResult:
    """Camera motion per clip (static / horizontal_pan / zoom / other) from the flow curation
    already computed (mean direction and divergence; no model re-runs), labelled in the catalog
    by one SQL statement, so it scales with the corpus. The rule and its thresholds are stored
    on every row; the camera LoRAs train on these labels.
    """
    from svd_dag.curation.camera_motion import CameraRule, label_clips

    rule = CameraRule(config.static_max_px, config.zoom_min_px, config.pan_min_px, config.pan_axis_ratio,
                      config.pan_coherence).validate()
    counts, version, n = catalog.catalog().write(lambda con: label_clips(con, rule))
    return dg.MaterializeResult(data_version=dg.DataVersion(version),
                                metadata={"dagster/row_count": n, "labels": dg.MetadataValue.json(counts),
                                          "rule": rule.describe()})


@dg.asset(group_name=GROUP, deps=[i2v_checkpoint, camera_motion_labels, "lvd_f"], code_version=TRAINING_CODE, pool="gpu",
          kinds={"pytorch", "mlflow", "peft"},
          check_specs=[dg.AssetCheckSpec("adapter_per_label", asset="camera_motion_loras",
                                         description="every camera label (static, horizontal_pan, zoom) got an adapter"),
                       *lineage_check_specs("camera_motion_loras")])
@retry_transient_errors
def camera_motion_loras(context: dg.AssetExecutionContext, config: FinetuneConfig, storage: StorageResource,
                        catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource,
                        launcher: TrainingLauncherResource) -> dg.MaterializeResult:
    """Camera-motion LoRAs: one rank-16 adapter on the I2V model's temporal attention per camera
    label (static, horizontal pan, zoom), each trained on the `lvd_f` clips with that label.
    Small safetensors files; load one onto the I2V model to steer its camera.
    """
    from svd_dag.curation.camera_motion import LABELS
    from svd_dag.curation.datasets import DatasetPart, publish_dataset
    from svd_dag.training.config import STAGE_PRESETS

    cat, store = catalog.catalog(), storage.store()
    parent = current_checkpoint(cat, "i2v_checkpoint")
    base = current_dataset(cat, "lvd_f")
    labelled = ("SELECT * EXCLUDE (dataset_version) FROM lvd_f WHERE clip_id IN "
                "(SELECT clip_id FROM camera_motion_labels WHERE label = ?) ORDER BY clip_id")
    adapters, summary, missing = {}, [], []
    for label in LABELS:
        if not cat.scalar(f"SELECT count(*) FROM ({labelled})", [label]):
            missing.append(label)
            summary.append({"label": label, "clips": 0, "adapter": "not trained: no clip has this label"})
            continue
        published = cat.write(lambda con: publish_dataset(
            con, store, [DatasetPart(f"camera_motion_loras:{label}", labelled, [label])],
            version_inputs={"parent": base["dataset_version"], "label": label},
            report={"parent": base["dataset_version"], "parent_dataset_version": base["dataset_version"], "label": label},
            folder=f"camera_motion_loras/{label}", total=base["kept"], make_current=False))
        clips = published.rows[f"camera_motion_loras:{label}"]
        dataset = {"dataset_version": published.version, "asset": f"lvd_f[camera={label}]",
                   "manifest_uri": published.manifest_uris[f"camera_motion_loras:{label}"]}
        trained = train_checkpoint(context, "camera_lora", config, dataset, parent, storage, catalog, model_store,
                                   mlflow, launcher, variant=label)
        adapters[label] = trained
        summary.append({"label": label, "clips": clips, "adapter": f"{trained.checkpoint_uri}/adapter"})
    if not adapters:  # nothing to train on: say so (the check fails) rather than fail the whole run
        context.log.warning("no lvd_f clip carries a camera label (static, horizontal_pan, zoom): no adapter trained")
        return dg.MaterializeResult(
            data_version=dg.DataVersion("no-adapters-" + base["dataset_version"]),
            metadata={"adapters": md_table(summary), "profile": config.profile},
            check_results=[dg.AssetCheckResult(check_name="adapter_per_label", passed=False,
                                               metadata={"missing": ", ".join(missing)}),
                           *lineage_check_results([])])
    version = hashlib.sha256("".join(t.result.data_version.value for t in adapters.values()).encode()).hexdigest()[:16]
    first = next(iter(adapters.values()))
    metadata = {f"{label}_adapter": uri_metadata(f"{t.checkpoint_uri}/adapter") for label, t in adapters.items()}
    metadata.update({f"{label}_mlflow_run": link_metadata(t.tracker.run_link(t.run_id)) for label, t in adapters.items()})
    preview = checkpoint_metadata(first, config.profile, store)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={**metadata, "adapters": md_table(summary), "base_checkpoint_uri": uri_metadata(parent["checkpoint_uri"]),
                  "lora_rank": first.meta.get("lora_rank", STAGE_PRESETS["camera_lora"][config.profile]["lora_rank"]),
                  "profile": config.profile,
                  **{k: v for k, v in preview.items() if k.startswith("sample_")}},
        check_results=[dg.AssetCheckResult(check_name="adapter_per_label", passed=not missing,
                                           metadata={"missing": ", ".join(missing) or "-"}),
                       *lineage_check_results(list(adapters.values()))],
    )


def _now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


finetune_assets = [i2v_checkpoint, interpolation_checkpoint, orbit_renders, multiview_checkpoint, camera_motion_labels,
                   camera_motion_loras]
