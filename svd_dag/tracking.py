"""MLflow as the record of training: runs, datasets as inputs, checkpoints as logged models.

Calls MLflow directly (not dagster-mlflow, which leaves runs RUNNING without its end
hook). The orchestrator creates the run, the training subprocess streams per-step metrics
into it by run id, and the orchestrator closes it with the outcome.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator


class Tracker:
    def __init__(self, tracking_uri: str, artifact_location: str, experiment: str = "svd-dag",
                 s3_endpoint_url: str = "", ui_url: str = ""):
        self.tracking_uri = tracking_uri
        self.ui_url = ui_url  # an MLflow UI serving this store (make ui), for links when the store is a file
        self.artifact_location = artifact_location
        self.experiment = experiment
        # MLflow prints "View run ... at <tracking URI>" on every run end, credentials included;
        # the asset metadata carries the link (without them) instead.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if s3_endpoint_url and artifact_location.startswith("s3://"):
            # MLflow's S3 artifact store reads its endpoint from this variable only.
            os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", s3_endpoint_url)

    def client(self):
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(self.tracking_uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
        return mlflow.MlflowClient(self.tracking_uri)

    def experiment_id(self) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def start_run(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        client = self.client()
        run = client.create_run(self.experiment_id(), run_name=run_name, tags=tags)
        from mlflow.entities import Param

        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])
        return run.info.run_id

    def log_dataset(self, run_id: str, manifest_uri: str, digest: str, name: str, context: str = "training") -> None:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource, S3ArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        source = S3ArtifactDatasetSource(manifest_uri) if manifest_uri.startswith("s3://") else LocalArtifactDatasetSource(manifest_uri)
        dataset = MetaDataset(source=source, name=name, digest=digest)
        entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
        self.client().log_inputs(run_id, datasets=[entry])

    def log_parent_model(self, run_id: str, model_id: str) -> None:
        """The checkpoint a run started from, as one of the run's inputs (MLflow's model input)."""
        from mlflow.entities import LoggedModelInput

        self.client().log_inputs(run_id, models=[LoggedModelInput(model_id)])

    def log_checkpoint_model(self, run_id: str, name: str, checkpoint_uri: str, params: dict[str, Any],
                             tags: dict[str, str]) -> str:
        """Register the checkpoint as an MLflow logged model (external: the weights stay in storage)."""
        import mlflow

        # The call is in MLflow's fluent API, which reads one process-wide tracking URI; and
        # set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, where every later
        # load_settings and subprocess of this process would read it. Both are put back after.
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            model = mlflow.create_external_model(
                name=name, source_run_id=run_id, params={k: str(v) for k, v in params.items()},
                tags={**tags, "svd_dag.checkpoint_uri": checkpoint_uri}, model_type="diffusers-unet",
                experiment_id=self.experiment_id(),
            )
        finally:
            mlflow.set_tracking_uri(before)  # None: unset again, the environment variable too
        return model.model_id

    def log_store_files(self, run_id: str, store, uris: list[str], artifact_path: str) -> None:
        """Copy files from storage (local or s3://) into the run's artifacts under `artifact_path`."""
        import tempfile

        client = self.client()
        with tempfile.TemporaryDirectory() as tmp:
            for uri in uris:
                local = store.local_path(uri)
                if local is None:
                    local = os.path.join(tmp, uri.rsplit("/", 1)[-1])
                    with open(local, "wb") as f:
                        f.write(store.read_bytes(uri))
                client.log_artifact(run_id, local, artifact_path)

    def log_json(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.client().log_dict(run_id, data, artifact_file)

    @contextlib.contextmanager
    def failing_run(self, run_id: str) -> Iterator[None]:
        """Ends the run FAILED when the block raises (a run is never left RUNNING by an error);
        the block itself ends it on success (`finish`)."""
        try:
            yield
        except BaseException:
            self.finish(run_id, {}, ok=False)
            raise

    def finish(self, run_id: str, metrics: dict[str, float], ok: bool = True) -> None:
        client = self.client()
        for key, value in metrics.items():
            if value is not None:
                client.log_metric(run_id, key, float(value))
        client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    def model_link(self, name: str) -> str:
        """A link to a registered model's page, like `run_link`."""
        if server := self._server_url():
            return f"{server}/#/models/{name}"
        return f"mlflow ui --backend-store-uri {self.display_uri}  ->  #/models/{name}"

    @property
    def display_uri(self) -> str:
        """The tracking URI as shown (links, metadata): without any credentials it carries."""
        from svd_dag.redact import redact

        return redact(self.tracking_uri)

    def _server_url(self) -> str | None:
        """Where a browser finds this store's MLflow UI: the tracking server, or the UI started
        on the local store; None when neither is known."""
        from svd_dag.redact import without_credentials

        if self.tracking_uri.startswith(("http://", "https://")):
            return without_credentials(self.tracking_uri).rstrip("/")
        return self.ui_url.rstrip("/") or None

    def run_link(self, run_id: str) -> str:
        """A link for the UI: the server's page, or how to open a local store."""
        exp = self.experiment_id()
        if server := self._server_url():
            return f"{server}/#/experiments/{exp}/runs/{run_id}"
        return f"mlflow ui --backend-store-uri {self.display_uri}  ->  #/experiments/{exp}/runs/{run_id}"
