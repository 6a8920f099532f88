"""Links to MLflow in metadata: real URLs whenever a UI or server is known, never credentials."""

from svd_dag.redact import redact, without_credentials
from svd_dag.tracking import Tracker


def test_a_local_store_links_to_the_mlflow_ui_serving_it(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "art"), ui_url="http://127.0.0.1:5000/")
    run_id = tracker.start_run("r", params={}, tags={})
    exp = tracker.experiment_id()
    assert tracker.run_link(run_id) == f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}"
    assert tracker.model_link("svd-dag.i2v") == "http://127.0.0.1:5000/#/models/svd-dag.i2v"
    plain = Tracker(tracker.tracking_uri, tracker.artifact_location)
    assert plain.run_link(run_id).startswith(f"mlflow ui --backend-store-uri {tracker.tracking_uri}")


def test_a_tracking_server_link_and_display_drop_its_credentials():
    tracker = Tracker("https://svd:hunter2@mlflow.internal:5000/", "s3://b/a")
    assert tracker._server_url() == "https://mlflow.internal:5000"
    assert tracker.display_uri == "https://***@mlflow.internal:5000/"
    assert "hunter2" not in tracker.model_link("m")


def test_redaction_masks_url_userinfo_and_dsn_passwords():
    assert redact("postgres:dbname=svd host=pg password=s3cret user=svd") == \
        "postgres:dbname=svd host=pg password=*** user=svd"
    assert redact("ducklake:postgres:dbname=x PASSWORD='a b c'") == "ducklake:postgres:dbname=x PASSWORD=***"
    assert redact("see http://u:p@h/x and s3://bucket/key") == "see http://***@h/x and s3://bucket/key"
    assert without_credentials("http://u:p@h:1/x") == "http://h:1/x"
    assert redact("no secrets here: http://h/x") == "no secrets here: http://h/x"


def test_logging_a_checkpoint_model_leaves_the_process_tracking_uri_alone(tmp_path, monkeypatch):
    """MLflow's fluent API sets MLFLOW_TRACKING_URI in os.environ; a Tracker must not leave it
    there, or every later load_settings and subprocess of the process tracks to that store."""
    import os

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "art"))
    run_id = tracker.start_run("r", params={}, tags={})
    model_id = tracker.log_checkpoint_model(run_id, "ckpt", str(tmp_path / "ckpt"), {"steps": 3}, {})
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracker.client().get_logged_model(model_id).source_run_id == run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # one the user set stays as it was
    tracker.log_checkpoint_model(run_id, "ckpt2", str(tmp_path / "ckpt2"), {}, {})
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"
    mlflow.set_tracking_uri(None)
