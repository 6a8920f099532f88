"""Training launcher: builds the `accelerate launch` command and runs it through Dagster Pipes.

The local backend runs it as a subprocess (`dg.PipesSubprocessClient`): logs stream into
Dagster and rank 0 reports the materialization. Production runs the same command in a GPU
pod with `dagster_k8s.PipesK8sClient` (image = this package, command = `command(...)`,
resources.limits."nvidia.com/gpu" = num_processes); only the client changes.
"""

import os
import socket
import sys

import dagster as dg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrainingLauncherResource(dg.ConfigurableResource):
    """`num_processes` per machine (GPUs, or CPU processes), `num_machines`, `mixed_precision`;
    `state_root`: local folder for resumable training state (one subfolder per run key)."""

    state_root: str
    num_processes: int = 1
    num_machines: int = 1
    mixed_precision: str = "no"
    threads_per_process: int = 0  # 0: cores / processes

    def command(self, config_path: str) -> list[str]:
        accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
        cmd = [accelerate, "launch", "--num_machines", str(self.num_machines), "--mixed_precision",
               self.mixed_precision, "--dynamo_backend", "no", "--num_processes", str(self.num_processes)]
        if self.num_processes * self.num_machines > 1:
            # On CPU accelerate only starts several processes in its multi-GPU (DDP) mode.
            cmd += ["--multi_gpu", "--main_process_port", str(_free_port())]
        return cmd + ["-m", "svd_dag.training.train", "--config", config_path]

    def run(self, context: dg.AssetExecutionContext, config_path: str, extras: dict) -> dg.MaterializeResult:
        threads = self.threads_per_process or max(1, (os.cpu_count() or 1) // self.num_processes)
        env = {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        completed = dg.PipesSubprocessClient(env=env).run(context=context, command=self.command(config_path),
                                                          extras=extras)
        return completed.get_materialize_result()
