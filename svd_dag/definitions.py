"""The one Definitions root of the svd-dag code location.

The environment is read inside `build_defs` (called by Dagster on every load), never at
import, so the same code runs on a laptop (embedded defaults under SVD_DAG_HOME) and in
production (s3:// storage, an MLflow server) by configuration alone.
"""

from __future__ import annotations

import os

import dagster as dg

from svd_dag.assets.ablation import ablation_assets
from svd_dag.assets.annotators import annotator_assets
from svd_dag.assets.checkpoint_eval import checkpoint_eval_assets
from svd_dag.assets.curation import curation_assets
from svd_dag.assets.datasets import dataset_assets
from svd_dag.assets.evaluation import evaluation_assets
from svd_dag.assets.rating import rating_assets
from svd_dag.assets.finetunes import finetune_assets
from svd_dag.assets.training import training_assets
from svd_dag.jobs.ablation import ablation_report_job, filter_ablation_job
from svd_dag.jobs.checkpoint_eval import model_quality_job
from svd_dag.jobs.curation import new_raw_video_sensor, recuration_job, weekly_recuration
from svd_dag.jobs.evaluation import evaluation_job, new_vote_files_sensor
from svd_dag.jobs.lineage import openlineage_export_sensor
from svd_dag.jobs.training import finetunes_job, training_job
from svd_dag.resources import (CatalogResource, MlflowResource, ModelStoreResource, OpenLineageResource,
                               StorageResource, TrainingLauncherResource, VideoExecutorResource)
from svd_dag.settings import Settings, bundled_samples_dir, load_settings


def build_resources(settings: Settings) -> dict:
    s3_endpoint = settings.s3_endpoint_url
    return {
        "orbit_source": StorageResource(uri=settings.orbits_uri, s3_endpoint_url=s3_endpoint),
        "raw_storage": StorageResource(uri=settings.raw_uri or str(bundled_samples_dir()), s3_endpoint_url=s3_endpoint),
        "storage": StorageResource(uri=settings.storage_uri, s3_endpoint_url=s3_endpoint),
        "votes_storage": StorageResource(uri=settings.votes_uri, s3_endpoint_url=s3_endpoint),
        "catalog": CatalogResource(
            metadata=settings.catalog_metadata, data_uri=settings.catalog_data_uri,
            password=dg.EnvVar("SVD_DAG_CATALOG_PASSWORD") if settings.catalog_password else None,
            scratch_dir=os.path.join(settings.home, "tmp"), memory_limit=settings.catalog_memory_limit,
        ),
        "model_store": ModelStoreResource(
            uri=settings.models_uri,
            cache_dir=os.path.join(settings.home, "model_cache"),
            fallback_dir=settings.shared_weights_dir,
        ),
        "mlflow": MlflowResource(
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI") if settings.mlflow_tracking_uri_from_env
            else settings.mlflow_tracking_uri,
            artifact_location=settings.mlflow_artifacts_uri, ui_url=settings.mlflow_ui_url,
            s3_endpoint_url=s3_endpoint,
        ),
        "launcher": TrainingLauncherResource(
            state_root=settings.train_scratch, num_processes=settings.train_processes,
            num_machines=settings.train_machines, machines=settings.train_machines_mode,
            main_process_ip=settings.train_main_ip, mixed_precision=settings.mixed_precision,
            backend=settings.train_backend, image=settings.train_image, namespace=settings.train_namespace,
            s3_endpoint_url=settings.s3_endpoint_url or "",
        ),
        "video_executor": video_executor(settings),
        "openlineage": OpenLineageResource(
            namespace=settings.openlineage_namespace, file=settings.openlineage_file, url=settings.openlineage_url,
            api_key=dg.EnvVar("SVD_DAG_OPENLINEAGE_API_KEY") if settings.openlineage_api_key_set else None,
        ),
    }


def video_executor(settings: Settings) -> VideoExecutorResource:
    if settings.executor not in ("local", "ray"):
        raise ValueError(f"SVD_DAG_EXECUTOR={settings.executor!r}: supported: 'local', 'ray'")
    ray_cluster = None
    if settings.executor == "ray":
        from dagster_ray import LocalRay

        from svd_dag.resources.executor import RayClusterAddress

        ray_cluster = RayClusterAddress(address=settings.ray_address) if settings.ray_address else \
            LocalRay(ray_init_options={"include_dashboard": False})
    return VideoExecutorResource(
        backend=settings.executor, max_workers=settings.max_workers, ray_cluster=ray_cluster,
        ray_cpus_per_item=settings.ray_cpus_per_video, ray_retries=settings.ray_retries,
        ray_item_timeout_s=settings.ray_item_timeout_s, ray_shared_filesystem=settings.ray_shared_filesystem)


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    return dg.Definitions(
        assets=[*curation_assets, *annotator_assets, *dataset_assets, *training_assets, *finetune_assets, *evaluation_assets, *rating_assets, *ablation_assets,
                *checkpoint_eval_assets],
        jobs=[recuration_job, training_job, finetunes_job, evaluation_job, filter_ablation_job, ablation_report_job,
              model_quality_job],
        schedules=[weekly_recuration],
        sensors=[new_raw_video_sensor, new_vote_files_sensor, openlineage_export_sensor],
        resources=build_resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
