"""FVD on the held-out split through Dagster, MLflow as the record (metrics linked to the
logged model and the eval dataset), and the champion alias that moves only past a blocking
not-worse check."""

import json

import dagster as dg
import pytest

from conftest import KEEP_ALL, run_config

FAMILIES = ["stage2_video_checkpoint", "stage3_hq_checkpoint"]
FVD = {"families": FAMILIES, "steps": 3, "resize": 64}


def _quality(curated, **registry):
    return curated["defs"].resolve_job_def("model_quality").execute_in_process(
        instance=curated["instance"], raise_on_error=False,
        run_config=run_config(fvd_eval=FVD, registered_checkpoints={"metric": "fvd", **registry}))


@pytest.fixture(scope="module")
def evaluated(curated, trained):
    result = _quality(curated)
    assert result.success
    return result


def test_fvd_uses_held_out_clips_that_no_training_saw(curated, evaluated):
    cat = curated["cat"]
    held = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f_eval")}
    assert len(held) >= 2
    trained_on = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM lvd_f UNION SELECT clip_id FROM hq_finetune_set")}
    assert not held & trained_on
    rows = {r["asset"]: r for r in cat.rows("SELECT * FROM fvd_results")}
    assert set(rows) == set(FAMILIES)
    for r in rows.values():
        assert r["n_real"] == r["n_fake"] == len(held) and r["features"] == "random" and r["fvd"] >= 0
        protocol = json.loads(r["protocol"])
        assert protocol["resolution"] == "64x64" and protocol["num_frames"] == 4 and protocol["features"] == "random"


def test_mlflow_links_fvd_to_the_logged_model_and_the_eval_dataset(curated, evaluated):
    import mlflow

    client = mlflow.MlflowClient(curated["settings"].mlflow_tracking_uri)
    for r in curated["cat"].rows("SELECT * FROM fvd_results"):
        model = client.get_logged_model(r["mlflow_model_id"])
        [metric] = [m for m in model.metrics if m.key == "fvd" and m.run_id == r["mlflow_run_id"]]
        assert metric.value == pytest.approx(r["fvd"])
        assert metric.dataset_digest == r["eval_dataset_version"] and metric.dataset_name == "lvd_f_eval"
        run = client.get_run(r["mlflow_run_id"])
        assert run.inputs.dataset_inputs[0].dataset.digest == r["eval_dataset_version"]


def test_the_champion_alias_moves_only_when_the_candidate_is_not_worse(curated, evaluated):
    import mlflow

    client = mlflow.MlflowClient(curated["settings"].mlflow_tracking_uri)
    name = "svd-dag.stage3_hq_checkpoint"
    first = client.get_model_version_by_alias(name, "champion")  # no champion before: the first candidate wins
    [evaluated_row] = curated["cat"].rows("SELECT * FROM fvd_results WHERE asset = 'stage3_hq_checkpoint'")
    assert first.tags["svd_dag.checkpoint_uri"] == evaluated_row["checkpoint_uri"]
    assert float(first.tags["svd_dag.fvd"]) == pytest.approx(evaluated_row["fvd"])

    # A new stage-III candidate (another seed), evaluated on the same held-out clips.
    retrain = curated["defs"].resolve_job_def("training").execute_in_process(
        instance=curated["instance"], asset_selection=[dg.AssetKey("stage3_hq_checkpoint")],
        run_config=run_config(hq_finetune_set=KEEP_ALL, stage3_hq_checkpoint={"steps": 2, "checkpoint_every": 2,
                                                                               "seed": 7}))
    assert retrain.success
    fvd = {r["data_version"]: r["fvd"] for r in curated["cat"].rows(
        "SELECT data_version, fvd FROM fvd_results WHERE asset = 'stage3_hq_checkpoint'")}
    assert _quality(curated, tolerance=-1e9).success is False  # "better by 1e9" cannot hold: the check blocks
    candidate = curated["cat"].rows("SELECT * FROM registry_candidates WHERE family = 'stage3_hq_checkpoint'")[0]
    assert not candidate["passes"] and candidate["champion_version"] == first.version
    assert client.get_model_version_by_alias(name, "champion").version == first.version  # the alias stayed
    assert len(fvd) == 1  # the new candidate had not been evaluated before this run

    moved = _quality(curated, tolerance=1e9)  # any FVD passes: the alias moves to the candidate
    assert moved.success
    assert client.get_model_version_by_alias(name, "champion").version == candidate["version"] != first.version
