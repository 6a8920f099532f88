"""Training launcher: builds the `accelerate launch` commands and runs them through Dagster Pipes.

One training is `num_machines` launches of the same command, one per machine, each starting
`num_processes` ranks; accelerate's `--num_processes` is the total over all machines. Rank 0
(machine 0) opens the Pipes channel and reports the materialization. The local backend runs
machine 0 as a subprocess (`dg.PipesSubprocessClient`); with `num_machines > 1` and
`machines="loopback"` it also starts the other machines' launches on this host (tests, or a
single box standing in for several), all pointed at 127.0.0.1.

On a cluster the same command runs once per node with its rank (docs/training.md): a
Kubeflow Trainer TrainJob or a KubeRay job (dagster-ray's `PipesKubeRayJobClient`) starts
the N pods; `dagster_k8s.PipesK8sClient` alone makes one pod, i.e. one machine. Every
machine reads the run config and the resumable state from the storage root, so none needs
the orchestrator's disk.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from typing import Literal

import dagster as dg
from pydantic import Field


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrainingLauncherResource(dg.ConfigurableResource):
    """Where and how wide a training runs."""

    state_root: str = Field(description="local scratch for runs (model and parent copies, downloaded states)")
    num_processes: int = Field(default=1, description="training processes per machine (its GPUs, or CPU processes)")
    num_machines: int = 1
    machines: str = Field(default="loopback", description="how machines 1..N-1 start: 'loopback' (this resource "
                          "starts them on this host) or 'external' (a cluster job does; see docs/training.md)")
    main_process_ip: str = "127.0.0.1"
    main_process_port: int = Field(default=0, description="rendezvous port on machine 0; 0: a free one per run")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    threads_per_process: int = 0  # 0: cores / processes
    backend: Literal["subprocess", "k8s"] = Field(
        default="subprocess", description="'subprocess': machine 0 runs here; 'k8s': in a GPU pod "
        "(dagster_k8s.PipesK8sClient, one pod = one machine) from `image`")
    image: str = Field(default="", description="k8s: the image of the training pod (deploy/Dockerfile)")
    namespace: str = ""
    node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    shm_size: str = Field(default="64Gi", description="k8s: /dev/shm of the pod (DataLoader workers, NCCL)")
    cpu_request: str = "8"
    memory_request: str = "64Gi"
    s3_endpoint_url: str = ""  # an S3-compatible endpoint the training must use too (not a secret)
    env_secrets: list[str] = Field(default_factory=list, description="k8s: Kubernetes secrets mounted as the "
                                   "training pod's environment (MLflow credentials, ...)")
    retries: int = Field(default=2, description="re-runs of a training whose process was killed (node lost, "
                         "OOM kill, preemption); each resumes from the newest saved state")
    retry_delay_s: int = 10

    @property
    def total_processes(self) -> int:
        return self.num_processes * self.num_machines

    @property
    def direct(self) -> bool:
        """One process on this machine: started as plain `python -m`, with the environment
        `accelerate launch` would give it (the launcher process would only cost its ~5 s start)."""
        return self.backend != "k8s" and self.total_processes == 1

    def command(self, config_uri: str, machine_rank: int = 0, port: int | None = None) -> list[str]:
        """The launch of one machine (`machine_rank`) of the run whose config is at `config_uri`."""
        if self.direct:
            return [sys.executable, "-m", "svd_dag.training.train", "--config", config_uri]
        accelerate = "accelerate" if self.backend == "k8s" else os.path.join(os.path.dirname(sys.executable),
                                                                               "accelerate")
        cmd = [accelerate, "launch", "--num_machines", str(self.num_machines), "--mixed_precision",
               self.mixed_precision, "--dynamo_backend", "no", "--num_processes", str(self.total_processes)]
        if self.total_processes > 1:
            # On CPU accelerate only starts several processes in its multi-GPU (DDP) mode.
            cmd += ["--multi_gpu", "--main_process_port", str(port or self.main_process_port or _free_port())]
        if self.num_machines > 1:
            cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", self.main_process_ip]
        return cmd + ["-m", "svd_dag.training.train", "--config", config_uri]

    def _env(self) -> dict[str, str]:
        cores = int(float(self.cpu_request)) if self.backend == "k8s" else (os.cpu_count() or 1)
        threads = self.threads_per_process or max(1, cores // self.num_processes)
        env = {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        if self.direct:  # what `accelerate launch` sets for one process (accelerate.utils.launch)
            env.update(ACCELERATE_MIXED_PRECISION=self.mixed_precision, ACCELERATE_DYNAMO_BACKEND="NO",
                       ACCELERATE_USE_CPU="False")
        if self.s3_endpoint_url:  # the run config and state are read from the storage root
            env["SVD_DAG_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        return env

    def pod_spec(self) -> dict:
        """The training pod's spec (k8s backend), beneath what PipesK8sClient adds (image,
        command, the Pipes environment): its GPUs, shared memory, GPU nodes, no restarts (a
        failed step is retried by Dagster and resumes from its state)."""
        return {
            "containers": [{
                "name": "train",
                "resources": {"limits": {"nvidia.com/gpu": str(self.num_processes)},
                              "requests": {"cpu": self.cpu_request, "memory": self.memory_request}},
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                **({"envFrom": [{"secretRef": {"name": name}} for name in self.env_secrets]} if self.env_secrets else {}),
            }],
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": self.shm_size}}],
            "nodeSelector": dict(self.node_selector),
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "restartPolicy": "Never",
        }

    def run(self, context: dg.AssetExecutionContext, config_uri: str, extras: dict,
            secrets: dict[str, str] | None = None) -> dg.MaterializeResult:
        """Run the training; `secrets` (e.g. the MLflow tracking URI, which may carry a password)
        reach the processes by their environment, never the run config written to storage."""
        if self.backend == "k8s":
            return self._run_pod(context, config_uri, extras, secrets or {})
        if self.num_machines > 1 and self.machines != "loopback":
            raise ValueError(f"num_machines={self.num_machines} with machines={self.machines!r}: this launcher starts "
                             "only loopback machines; a cluster starts one `command(config, rank)` per node "
                             "(docs/training.md)")
        port = self.main_process_port or _free_port()
        env = {**self._env(), **(secrets or {})}
        others = [self._start_machine(config_uri, rank, port, env) for rank in range(1, self.num_machines)]
        try:
            try:
                completed = dg.PipesSubprocessClient(env=env).run(
                    context=context, command=self.command(config_uri, 0, port), extras=extras)
            except Exception as error:  # dagster raises DagsterPipesExecutionError (not public API)
                self._retry_if_killed(error)
                raise
            for rank, proc in enumerate(others, start=1):
                if proc.wait(timeout=600) != 0:
                    raise RuntimeError(f"training machine {rank} exited with {proc.returncode} (rank 0 finished)")
        finally:
            for proc in others:
                _stop(proc)
        return completed.get_materialize_result()

    def _retry_if_killed(self, error: Exception) -> None:
        """A training that died by a signal is asked to run again (Dagster's step retry, up to
        `retries`): it resumes from its state, so only the steps since that state are lost. An
        exit with an error (bad config, a refused input, CUDA out of memory) is not retried:
        it would fail the same way."""
        m = re.search(r"failed with code (-?\d+)", str(error))
        code = int(m.group(1)) if m else None
        if code is not None and (code < 0 or code in (128 + signal.SIGKILL, 128 + signal.SIGTERM)):
            raise dg.RetryRequested(max_retries=self.retries, seconds_to_wait=self.retry_delay_s) from error

    def _run_pod(self, context: dg.AssetExecutionContext, config_uri: str, extras: dict,
                 secrets: dict[str, str]) -> dg.MaterializeResult:
        from dagster_k8s import PipesK8sClient

        if self.num_machines > 1:
            raise ValueError(f"num_machines={self.num_machines}: a PipesK8sClient pod is one machine; several "
                             "machines are a TrainJob or RayJob (docs/training.md)")
        if not self.image or "://" not in config_uri:
            raise ValueError("the k8s backend needs `image` and a run config under an s3:// storage root "
                             f"(got image={self.image!r}, config {config_uri})")
        from svd_dag.redact import has_credentials

        # A pod's env is readable by anyone who can read the pod: values with credentials come
        # from the Kubernetes secrets in `env_secrets` instead.
        env = {**self._env(), **{k: v for k, v in secrets.items() if not has_credentials(v)}}
        completed = PipesK8sClient().run(context=context, image=self.image, command=self.command(config_uri),
                                         namespace=self.namespace or None, env=env,
                                         base_pod_spec=self.pod_spec(), extras=extras)
        return completed.get_materialize_result()

    def _start_machine(self, config_uri: str, rank: int, port: int, env: dict[str, str]) -> subprocess.Popen:
        """Machine `rank` of a loopback run: no Pipes channel (only rank 0 reports), its output
        inherited so it reaches the run's logs with rank 0's."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}
        return subprocess.Popen(self.command(config_uri, rank, port), env={**inherited, **env},
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a machine's launch and the ranks it started (its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
