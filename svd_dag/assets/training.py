"""Training group: the stage-III subset and the three stage checkpoints of SVD.

`lvd_f` -> `stage1_image_checkpoint` -> `stage2_video_checkpoint` -> `stage3_hq_checkpoint`
(with `hq_finetune_set`). Each checkpoint is one `accelerate launch` of
`svd_dag.training.train` through Dagster Pipes (the launcher resource), one MLflow run
with the dataset logged as an input and the checkpoint as a logged model, and one row in
the catalog's `checkpoints` table: the lineage from weights back to dataset version.
"""

from typing import Optional

import dagster as dg
import pyarrow as pa
from pydantic import Field

from svd_dag.assets.checkpoint_runs import (TRAINING_CODE, StageConfig, checkpoint_metadata, current_checkpoint,
                                            train_checkpoint)
from svd_dag.assets.common import retry_transient_errors, source_version, uri_metadata
from svd_dag.assets.lineage_checks import lineage_check_results, lineage_check_specs
from svd_dag.curation.datasets import current_dataset
from svd_dag.lineage.records import record_checkpoint_clips
from svd_dag.resources import (CatalogResource, MlflowResource, ModelStoreResource, StorageResource,
                               TrainingLauncherResource)

GROUP = "training"
class HqSetConfig(dg.Config):
    motion_remove: float = Field(default=0.25, description="further fraction of lvd_f removed for lowest motion")
    aesthetics_remove: float = Field(default=0.5, description="further fraction removed for lowest aesthetics")
    caption_similarity_remove: float = Field(default=0.25, description="further fraction removed for lowest caption similarity")
    text_remove: float = Field(default=0.0, description="further fraction removed for most text")

    def fractions(self) -> dict[str, float]:
        return {"motion": self.motion_remove, "aesthetics": self.aesthetics_remove,
                "caption_similarity": self.caption_similarity_remove, "text": self.text_remove}


@dg.asset(group_name=GROUP, deps=["lvd_f"], code_version=source_version("curation/filtering.py", "curation/datasets.py"),
          kinds={"duckdb", "parquet"}, check_specs=[dg.AssetCheckSpec("keeps_clips", asset="hq_finetune_set", blocking=True)])
@retry_transient_errors
def hq_finetune_set(context: dg.AssetExecutionContext, config: HqSetConfig, storage: StorageResource,
                    catalog: CatalogResource) -> dg.MaterializeResult:
    """The small high-quality subset for stage III: the same percentile filters as `lvd_f`,
    stricter, applied within the current `lvd_f` version (the paper: ~250K of ~152M clips).
    An immutable, content-addressed manifest like `lvd_f`'s, with its thresholds and parent
    version; all of it SQL in the catalog.
    """
    from svd_dag.curation.datasets import (MANIFEST_COLUMNS, DatasetPart, annotator_snapshot, publish_dataset,
                                           record_decisions, weights_label)
    from svd_dag.curation.filtering import percentile_filter

    cat, store = catalog.catalog(), storage.store()
    parent = current_dataset(cat, "lvd_f")
    fractions = config.fractions()

    def publish(con):
        con.execute("CREATE OR REPLACE TEMP VIEW hq_source AS "
                    "SELECT * FROM annotations WHERE clip_id IN (SELECT clip_id FROM lvd_f)")
        result = percentile_filter(con, fractions, source="hq_source")
        annotators = annotator_snapshot(con)
        report = {"parent_dataset_version": parent["dataset_version"], "thresholds": {"remove_fractions": fractions},
                  "cutoffs": result.cutoffs, "removed_by_criterion": result.removed, "unscored": result.unscored,
                  "total": result.total, "weights": weights_label(annotators), "annotators": annotators}
        published = publish_dataset(
            con, store, [DatasetPart("hq_finetune_set", f"SELECT {MANIFEST_COLUMNS} FROM annotations JOIN filter_outcome "
                                                        "USING (clip_id) WHERE kept ORDER BY clip_id")],
            version_inputs={"parent": parent["dataset_version"], "remove_fractions": fractions,
                            "annotators": annotators},
            report=report, folder="hq_finetune_set", total=result.total)
        record_decisions(con, published.version)
        return result, report, published

    result, report, published = cat.write(publish)
    kept = published.rows["hq_finetune_set"]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(published.version),
        metadata={"dagster/row_count": kept, "dataset_version": published.version,
                  "parent_dataset_version": parent["dataset_version"],
                  "clips_in": result.total, "removed_by_criterion": dg.MetadataValue.json(result.removed),
                  "cutoffs": dg.MetadataValue.json(result.cutoffs),
                  "manifest_uri": uri_metadata(published.manifest_uris["hq_finetune_set"]),
                  "weights": report["weights"]},
        check_results=[dg.AssetCheckResult(check_name="keeps_clips", passed=kept > 0, metadata={"kept": kept})],
    )


def _train_stage(context: dg.AssetExecutionContext, stage_key: str, config: StageConfig, dataset_asset: str,
                 parent_asset: Optional[str], storage: StorageResource, catalog: CatalogResource,
                 model_store: ModelStoreResource, mlflow: MlflowResource, launcher: TrainingLauncherResource,
                 ) -> dg.MaterializeResult:
    cat = catalog.catalog()
    dataset = {**current_dataset(cat, dataset_asset), "asset": dataset_asset}
    parent = current_checkpoint(cat, parent_asset) if parent_asset else None
    trained = train_checkpoint(context, stage_key, config, dataset, parent, storage, catalog, model_store, mlflow,
                               launcher)
    if config.hires_phase:
        if stage_key != "stage2":
            raise ValueError("hires_phase applies to stage2_video_checkpoint only")
        base = current_checkpoint(cat, context.asset_key.to_user_string())  # the row the first phase just wrote
        trained = train_checkpoint(context, "stage2_hires", config, dataset, base, storage, catalog, model_store,
                                   mlflow, launcher, variant="hires")
        hires = current_checkpoint(cat, context.asset_key.to_user_string(), "hires")
        record_checkpoint_clips(cat, storage.store(), hires["asset"], "", hires["data_version"], hires["clips_used_uri"])
        cat.upsert("checkpoints", pa.Table.from_pylist([{**hires, "variant": ""}]),
                   key=["asset", "variant", "data_version"])
    return dg.MaterializeResult(data_version=trained.result.data_version,
                                metadata=checkpoint_metadata(trained, config.profile, storage.store()),
                                check_results=lineage_check_results([trained]))


def _stage_asset(name: str, stage_key: str, dataset_asset: str, parent, description: str):
    # clip_shards: training reads the shard index when clip_shards has run (data_source auto/shards).
    deps = [dataset_asset, "clip_shards"] + ([parent] if parent is not None else [])

    @dg.asset(name=name, group_name=GROUP, deps=deps, code_version=TRAINING_CODE, pool="gpu", kinds={"pytorch", "mlflow"},
              description=description, check_specs=lineage_check_specs(name))
    @retry_transient_errors
    def _asset(context: dg.AssetExecutionContext, config: StageConfig, storage: StorageResource,
               catalog: CatalogResource, model_store: ModelStoreResource, mlflow: MlflowResource,
               launcher: TrainingLauncherResource) -> dg.MaterializeResult:
        parent_name = parent.key.to_user_string() if parent is not None else None
        return _train_stage(context, stage_key, config, dataset_asset, parent_name,
                            storage, catalog, model_store, mlflow, launcher)

    return _asset


stage1_image_checkpoint = _stage_asset(
    "stage1_image_checkpoint", "stage1", "lvd_f", None,
    "SVD stage I: the image model (a UNet2DConditionModel; full profile starts from SD 2.1) trained on single "
    "frames of lvd_f at 256x384 with ln sigma ~ N(-1.2, 1); the first phase trains the time embedding only.")
stage2_video_checkpoint = _stage_asset(
    "stage2_video_checkpoint", "stage2", "lvd_f", stage1_image_checkpoint,
    "SVD stage II: stage I inflated into a UNetSpatioTemporalConditionModel (spatial weights copied, temporal "
    "convolution + attention new, mixed by a learned alpha) and trained on 14-frame lvd_f clips with fps, "
    "motion-bucket and noise-strength micro-conditioning.")
stage3_hq_checkpoint = _stage_asset(
    "stage3_hq_checkpoint", "stage3", "hq_finetune_set", stage2_video_checkpoint,
    "SVD stage III: stage II fine-tuned on the high-quality subset at high resolution with ln sigma ~ N(0.5, 1.4), "
    "lr 3e-5 and EMA.")

training_assets = [hq_finetune_set, stage1_image_checkpoint, stage2_video_checkpoint, stage3_hq_checkpoint]
