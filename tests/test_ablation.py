"""The curation study: grid cells through Dagster (subset -> small model -> probe samples), the
proxy judge, Elo per cell, a recommended threshold that lvd_f can adopt, MLflow as the record."""

import json

import dagster as dg
import numpy as np
import pytest

from conftest import KEEP_ALL, LVD_F_SESSION, meta_of, run_config
from svd_dag.evaluation.ablation import JUDGE_ID, LEVELS, cell_fractions, judge_pair, judge_votes, recommend

QUICK = {"steps": 3, "checkpoint_every": 3, "probe_clips": 2}


def test_a_cell_filters_by_its_criterion_alone():
    assert cell_fractions("motion", "25") == {"motion": 0.25, "aesthetics": 0.0, "caption_similarity": 0.0, "text": 0.0}
    with pytest.raises(ValueError, match="level"):
        cell_fractions("motion", "30")
    with pytest.raises(ValueError, match="criterion"):
        cell_fractions("colour", "25")


def test_the_judge_prefers_the_sample_closer_to_the_real_clip():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    close = np.clip(reference.astype(int) + rng.integers(-5, 6, reference.shape), 0, 255).astype(np.uint8)
    far = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert judge_pair(close, far, reference) == "a"
    assert judge_pair(far, close, reference) == "b"
    assert judge_pair(close, close, reference) == "tie"
    votes = judge_votes({"m1": {"p": close}, "m2": {"p": far}, "m3": {"p": close}}, {"p": reference}, pool="x")
    assert len(votes) == 3 and all(v["rater_id"] == JUDGE_ID and v["pool"] == "x" for v in votes)


def test_recommendation_is_the_best_rated_level_and_says_if_it_is_separated():
    rec = recommend("motion", {"12.5": (990, 980, 1000), "25": (1020, 1010, 1030), "50": (990, 985, 995)}, "judge")
    assert (rec.level, rec.remove_fraction, rec.separated, rec.rater_kind) == ("25", 0.25, True, "judge")
    assert not recommend("motion", {"12.5": (1000, 990, 1012), "25": (1005, 995, 1015)}, "human").separated
    with pytest.raises(ValueError):
        recommend("motion", {"25": (1000, 990, 1010)}, "judge")


@pytest.fixture(scope="module")
def study(curated, trained):
    defs, instance = curated["defs"], curated["instance"]
    for level in ("12.5", "50"):
        key = dg.MultiPartitionKey({"criterion": "motion", "level": level})
        result = defs.resolve_job_def("filter_ablation_cell").execute_in_process(
            instance=instance, partition_key=key, run_config=run_config(filter_ablation=QUICK))
        assert result.success
    report = defs.resolve_job_def("curation_study_report").execute_in_process(
        instance=instance, run_config=run_config(filter_ablation_report={"rounds": 200}))
    assert report.success
    return report


def test_two_cells_train_render_and_are_ranked_by_the_proxy_judge(curated, study):
    cat = curated["cat"]
    cells = {r["variant"]: r for r in cat.rows("SELECT * FROM checkpoints WHERE asset = 'filter_ablation'")}
    assert set(cells) == {"motion|12.5", "motion|50"}
    kept = {r["asset"]: r["kept"] for r in cat.rows("SELECT asset, kept FROM dataset_versions WHERE asset LIKE 'filter_ablation:%'")}
    assert kept["filter_ablation:motion|12.5"] > kept["filter_ablation:motion|50"]  # removing more keeps less
    # The probe clips (what the judge compares samples with) are in no cell's training data.
    probe = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM annotations WHERE caption <> '' ORDER BY clip_id "
                                            "LIMIT ?", [QUICK["probe_clips"]])}
    trained_on = {r["clip_id"] for r in cat.rows("SELECT clip_id FROM dataset_members WHERE asset LIKE 'filter_ablation:%'")}
    assert len(probe) == QUICK["probe_clips"] and trained_on and not probe & trained_on
    results = cat.rows("SELECT * FROM ablation_results ORDER BY level")
    assert [r["level"] for r in results] == ["12.5", "50"] and {r["rater_kind"] for r in results} == {"judge"}
    # (the mean of the shuffled runs may sit outside their percentile interval when few votes make it discrete)
    assert all(r["elo_low"] <= r["elo_high"] and r["n_votes"] > 0 for r in results)
    assert sum(r["elo"] for r in results) == pytest.approx(2000, abs=1e-6)  # Elo is zero-sum around 1000
    votes = cat.rows("SELECT * FROM ablation_judge_votes")
    assert votes and {v["rater_id"] for v in votes} == {JUDGE_ID}
    [rec] = cat.rows("SELECT * FROM ablation_recommendations")
    assert rec["criterion"] == "motion" and rec["level"] in ("12.5", "50") and rec["rater_kind"] == "judge"
    assert "proxy" in meta_of(study, "filter_ablation_report")["judge"]


def test_mlflow_holds_the_cells_and_the_report(curated, study):
    import mlflow

    client = mlflow.MlflowClient(curated["settings"].mlflow_tracking_uri)
    cells = curated["cat"].rows("SELECT mlflow_run_id, dataset_version FROM checkpoints WHERE asset = 'filter_ablation'")
    for cell in cells:
        run = client.get_run(cell["mlflow_run_id"])
        assert run.inputs.dataset_inputs[0].dataset.digest == cell["dataset_version"]
    [run] = client.search_runs([r.experiment_id for r in client.search_experiments()],
                               "tags.`dagster.asset` = 'filter_ablation_report'")
    assert {"elo_motion_12_5", "elo_motion_50"} <= set(run.data.metrics)


def test_lvd_f_can_adopt_the_recommended_threshold(curated, study):
    cat = curated["cat"]
    [rec] = cat.rows("SELECT * FROM ablation_recommendations")
    job = curated["defs"].resolve_job_def("recuration")
    try:
        out = job.execute_in_process(instance=curated["instance"], asset_selection=[dg.AssetKey("lvd_f"), dg.AssetKey("lvd_f_eval")],
                                     run_config=run_config(lvd_f={**KEEP_ALL, "use_ablation_recommendations": True}))
        assert out.success
        latest = cat.rows("SELECT report FROM dataset_versions WHERE asset = 'lvd_f' ORDER BY created_at DESC LIMIT 1")[0]
    finally:  # the session's other tests expect the keep-everything lvd_f
        assert job.execute_in_process(instance=curated["instance"], asset_selection=[dg.AssetKey("lvd_f"), dg.AssetKey("lvd_f_eval")],
                                      run_config=run_config(lvd_f=LVD_F_SESSION)).success
    thresholds = json.loads(latest["report"])["thresholds"]
    assert thresholds["remove_fractions"]["motion"] == LEVELS[rec["level"]]
    assert "motion" in thresholds["from_ablation"]
