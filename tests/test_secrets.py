"""Secrets stay out of everything the code location shows or writes.

Planted: an MLflow tracking URI with a user and password (a real MLflow server on 127.0.0.1,
which ignores them), AWS keys and a catalog password. Curation and a tiny stage I run
through Dagster; then every event of the runs (metadata values, log lines, Pipes messages),
the processes' output, every MLflow param and tag, and every text file written under the
home (JSON, Markdown, YAML, CSV) are scanned: none may hold a planted value.
"""

import os
import shutil
import uuid

import dagster as dg

from conftest import run_config

def _masked(text: str, planted: dict) -> str:
    for name, value in planted.items():
        text = text.replace(value, f"<{name}>")
    return text


TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".yaml", ".yml", ".txt", ".csv", ".log")


def test_planted_credentials_appear_in_no_metadata_log_mlflow_record_or_file(tmp_path, monkeypatch, capfd,
                                                                             bikes_path, mlflow_server):
    import mlflow

    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings

    planted = {"mlflow_password": f"mlflow-pw-{uuid.uuid4().hex}", "aws_secret": f"aws-secret-{uuid.uuid4().hex}",
               "aws_key_id": f"AKIAPLANTED{uuid.uuid4().hex[:8].upper()}"}
    host = mlflow_server.removeprefix("http://")
    tracking = f"http://svd-user:{planted['mlflow_password']}@{host}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", planted["aws_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", planted["aws_secret"])
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(bikes_path, raw / "bikes.mp4")
    home = tmp_path / "home"
    settings = load_settings({"SVD_DAG_HOME": str(home), "SVD_DAG_RAW_URI": str(raw),
                              "SVD_DAG_MODELS_URI": str(tmp_path / "models"), "MLFLOW_TRACKING_URI": tracking})
    assert settings.mlflow_tracking_uri_from_env
    defs, instance = build_defs(settings), dg.DagsterInstance.ephemeral()
    light = {"caption_similarity_remove": 0.0, "aesthetics_remove": 0.0}  # five clips: keep the manifest non-empty
    curation = defs.resolve_job_def("recuration").execute_in_process(instance=instance,
                                                                     run_config=run_config(lvd_f=light))
    assert curation.success
    training = defs.resolve_job_def("training").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("stage1_image_checkpoint")],
        run_config=run_config(stage1_image_checkpoint={"steps": 2, "checkpoint_every": 2, "vae_fit_steps": 5}))
    assert training.success

    def leaks(text: str) -> list[str]:
        return [name for name, value in planted.items() if value in text]

    found: dict[str, list[str]] = {}
    for result in (curation, training):
        for entry in instance.all_logs(result.run_id):
            if hit := leaks(repr(entry)):
                found[f"event {entry.dagster_event_type or 'log'}: {entry.user_message[:80]}"] = hit
    out, err = capfd.readouterr()
    for line in (out + err).splitlines():
        if hit := leaks(line):  # shown with the secret masked, so the failure names where it leaked
            found.setdefault("process output", []).append(_masked(line, planted)[:300])
    client = mlflow.MlflowClient(tracking)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert runs, "the training logged no MLflow run"
    for run in runs:
        if hit := leaks(repr(run.data.params) + repr(run.data.tags) + repr(run.info)):
            found[f"mlflow run {run.info.run_name}"] = hit
    written = 0
    for base, _, files in os.walk(home):
        for name in files:
            if name.endswith(TEXT_SUFFIXES):
                path = os.path.join(base, name)
                written += 1
                with open(path, errors="replace") as f:
                    if hit := leaks(f.read()):
                        found[os.path.relpath(path, home)] = hit
    assert written > 10  # run.json, svd_dag_training.json, lineage.json, DATASHEET.md, manifests' sidecars...
    meta = {k: getattr(v, "value", v) for e in training.get_asset_materialization_events()
            for k, v in e.event_specific_data.materialization.metadata.items()}
    assert str(meta["mlflow_run"]).startswith(f"http://{host}/#/experiments/")  # a link, credentials left out
    assert found == {}
