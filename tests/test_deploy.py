"""The production instance (deploy/dagster.yaml) on a real Postgres (pgserver): it loads with
every limit it promises, and a run of this code location completes with its runs, events
and asset records in Postgres."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@pytest.fixture()
def production_instance(postgres, tmp_path, monkeypatch):
    dsn = dict(part.split("=", 1) for part in postgres().split())
    monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://{dsn['user']}@/{dsn['dbname']}?host={dsn['host']}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


def test_the_production_instance_keeps_everything_in_postgres_with_its_limits(production_instance):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = production_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1  # `gpu` and `checkpoints` start at 1
    assert concurrency.run_queue_config.max_concurrent_runs == 8
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled
    assert not instance.telemetry_enabled


def test_a_run_of_the_code_location_completes_on_the_production_instance(production_instance, tmp_path, samples_dir):
    """`raw_videos` (the inventory) materializes through the real Definitions; its run, events
    and asset record are read back from Postgres."""
    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(os.path.join(samples_dir, "bikes.mp4"), raw / "bikes.mp4")
    settings = load_settings({"SVD_DAG_HOME": str(tmp_path / "home"), "SVD_DAG_RAW_URI": str(raw)})
    defs = build_defs(settings)
    result = dg.materialize([defs.get_assets_def("raw_videos")], instance=production_instance,
                            resources=defs.resources)
    assert result.success
    [record] = production_instance.get_run_records()
    assert record.dagster_run.run_id == result.run_id and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    latest = production_instance.get_latest_materialization_event(dg.AssetKey("raw_videos"))
    assert latest is not None and latest.run_id == result.run_id


def test_the_training_pod_runs_the_launch_on_gpu_nodes_with_its_gpus_and_shared_memory():
    """The pod our launcher hands PipesK8sClient, built the way dagster-k8s builds it (its
    `build_pod_body`, Kubernetes' own models), checked field by field."""
    from dagster_k8s.pipes import build_pod_body

    from svd_dag.resources.launcher import TrainingLauncherResource

    launcher = TrainingLauncherResource(state_root="/scratch", backend="k8s", image="registry.internal/svd-dag:0.1.0",
                                        num_processes=8, mixed_precision="bf16", s3_endpoint_url="http://minio:9000",
                                        env_secrets=["svd-dag-mlflow"])
    config = "s3://svd/train_state/stage2_video_checkpoint/abc/run.json"
    pod = build_pod_body("train-abc", launcher.image, launcher.command(config), launcher._env(), None,
                         launcher.pod_spec())
    [container] = pod.spec.containers
    assert container.image == "registry.internal/svd-dag:0.1.0"
    assert container.command[:2] == ["accelerate", "launch"] and container.command[-2:] == ["--config", config]
    args = dict(zip(container.command[2::2], container.command[3::2]))
    assert args["--num_processes"] == "8" and args["--num_machines"] == "1" and args["--mixed_precision"] == "bf16"
    assert "--multi_gpu" in container.command and "-m" in container.command
    assert container.resources.limits == {"nvidia.com/gpu": "8"}
    assert container.resources.requests == {"cpu": "8", "memory": "64Gi"}
    [mount] = container.volume_mounts
    [volume] = pod.spec.volumes
    assert (mount.name, mount.mount_path) == ("dshm", "/dev/shm") and volume.name == "dshm"
    assert volume.empty_dir.medium == "Memory" and volume.empty_dir.size_limit == "64Gi"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert pod.spec.restart_policy == "Never"
    env = {e.name: e.value for e in container.env}
    assert env["OMP_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["SVD_DAG_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert [e.secret_ref.name for e in container.env_from] == ["svd-dag-mlflow"]  # credentials from a secret


def test_the_k8s_launcher_refuses_what_one_pod_cannot_run():
    from svd_dag.resources.launcher import TrainingLauncherResource

    two = TrainingLauncherResource(state_root="/s", backend="k8s", image="i", num_machines=2)
    with pytest.raises(ValueError, match="a PipesK8sClient pod is one machine"):
        two.run(None, "s3://b/run.json", {})
    with pytest.raises(ValueError, match="needs `image` and a run config under an s3:// storage root"):
        TrainingLauncherResource(state_root="/s", backend="k8s").run(None, "/local/run.json", {})
    with pytest.raises(Exception, match="mixed_precision"):
        TrainingLauncherResource(state_root="/s", mixed_precision="bf32")
