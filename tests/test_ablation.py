"""The curation study: grid cells through Dagster (subset -> small model -> probe samples), the
proxy judge, Elo per cell, a recommended threshold that lvd_f can adopt, MLflow as the record."""

import json

import dagster as dg
import numpy as np
import pytest

from conftest import KEEP_ALL, LVD_F_SESSION, assets_job, meta_of, run_config
from svd_dag.evaluation.ablation import JUDGE_ID, LEVELS, cell_fractions, judge_pair, judge_votes, recommend

QUICK = {"steps": 3, "checkpoint_every": 3, "probe_clips": 2, "vae_fit_steps": 20}


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


def test_the_study_inflates_the_base_image_model_and_never_a_parent(tmp_path):
    from svd_dag.model_store import ModelStore
    from svd_dag.training.config import STAGE_PRESETS, TrainConfig
    from svd_dag.training.model_init import build_unet

    def config(profile, **extra):
        preset = {**STAGE_PRESETS["ablation"][profile], **extra}
        return TrainConfig(profile=profile, manifest_uri="", output_uri="", state_dir="", **preset)

    assert all(STAGE_PRESETS["ablation"][p]["inflate_base_image"] for p in ("tiny", "full"))
    with pytest.raises(ValueError, match="no parent"):
        config("tiny", init_from=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="no parent"):
        TrainConfig(profile="tiny", manifest_uri="", output_uri="", state_dir="", stage="image",
                    inflate_base_image=True).validate()
    # The full profile starts from SD 2.1, as stage I does: a store without it is named.
    with pytest.raises(FileNotFoundError, match="sd21/unet"):
        build_unet(config("full").validate(), 4, 1024, ModelStore(str(tmp_path), str(tmp_path / "cache")))
    unet, info = build_unet(config("tiny").validate(), 4, 32)
    assert type(unet).__name__ == "UNetSpatioTemporalConditionModel" and info["init"].startswith("inflated from")


@pytest.fixture(scope="module")
def study(curated):
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
    # Every cell inflates the base image model: none descends from stage I, which trains on lvd_f.
    for cell in cells.values():
        assert cell["parent_asset"] is None and cell["parent_checkpoint_uri"] is None
        with open(f"{cell['checkpoint_uri']}/svd_dag_training.json") as f:
            init = json.load(f)["init"]
        assert init["init"] == "inflated from random (tiny profile)" and init["new_params"] > 0, init
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
    # The record names the report version it adopted: the data version Dagster shows for it.
    event = curated["instance"].get_latest_materialization_event(dg.AssetKey("filter_ablation_report"))
    report_version = event.asset_materialization.tags["dagster/data_version"]
    assert rec["report_version"] == report_version
    assert thresholds["from_ablation"]["motion"].endswith(f"filter_ablation_report@{report_version})")


# --- The study ranked by people: rating_tasks -> the rating page -> votes -> report -> lvd_f ---

def _materialize(defs, instance, *assets, run_config=None):
    result = assets_job(defs, *assets).execute_in_process(instance=instance, run_config=run_config or {})
    assert result.success
    return result


@pytest.fixture(scope="module")
def campaign(curated, trained, study, tmp_path_factory):
    """rating_tasks over the session's checkpoints and the study's two cells, served by a real
    `svd-dag rating serve`; votes go to a votes root of this campaign only."""
    import dataclasses

    import rating_fixtures
    from svd_dag.definitions import build_defs
    from svd_dag.rating.raters import Raters
    from svd_dag.rating.server import RatingServer
    from svd_dag.rating.tasks import load_task_list
    from svd_dag.storage import Store

    root = tmp_path_factory.mktemp("campaign")
    (root / "votes").mkdir()
    settings = dataclasses.replace(curated["settings"], votes_uri=str(root / "votes"))
    defs, instance, cat = build_defs(settings), curated["instance"], curated["cat"]
    [judged] = cat.rows("SELECT * FROM ablation_recommendations WHERE criterion = 'motion'")
    made = meta_of(_materialize(defs, instance, "rating_tasks"), "rating_tasks")
    env = rating_fixtures.server_env(root)
    raters = Raters(Store(env["SVD_DAG_RATING_URI"]))
    tokens = {name: raters.add(name).token for name in ("ann", "ben", "cat", "dev", "eve")}
    try:
        with RatingServer(made["tasks_uri"], env=env, log=root / "rating.log") as server:
            yield {"defs": defs, "instance": instance, "cat": cat, "made": made, "server": server, "tokens": tokens,
                   "tasks": load_task_list(made["tasks_uri"]), "judged": judged, "votes": str(root / "votes")}
    finally:  # the session's other tests count the catalog's votes: take this campaign's out again
        cat.write(lambda con: [con.execute(f"DELETE FROM {t} WHERE {c} LIKE ?", [str(root) + "%"])
                               for t, c in (("preference_votes", "source_file"), ("vote_files", "uri"))
                               if t in cat.tables()])
        _materialize(defs, instance, "filter_ablation_report", run_config=run_config(filter_ablation_report={"rounds": 200}))


def test_rating_tasks_pair_current_checkpoints_and_cells_on_the_same_inputs(campaign):
    from svd_dag.evaluation.rating_tasks import GOLD_DEGRADED, GOLD_SOURCE
    from svd_dag.evaluation.votes import canonical_model_id
    from svd_dag.sampling.video_io import decode_mp4
    from svd_dag.storage import Store

    cat, tasks = campaign["cat"], campaign["tasks"]
    current = {canonical_model_id(r["asset"], r["variant"], r["data_version"]): r for r in cat.rows(
        "SELECT * FROM checkpoints QUALIFY row_number() OVER (PARTITION BY asset, variant ORDER BY created_at DESC) = 1")}
    cells = {m for m, r in current.items() if r["asset"] == "filter_ablation"}
    pools = {}
    for p in tasks.pairs:
        pools.setdefault(p.pool, []).append(p)
    assert set(pools) == {"main", "ablation:motion", "gold"}, set(pools)
    # every two cells on every probe input both rendered: 2 cells x 2 probe clips (seed 0)
    assert len(pools["ablation:motion"]) == QUICK["probe_clips"]
    assert all({p.a.model, p.b.model} == cells for p in pools["ablation:motion"])
    for p in pools["main"]:  # exact names of current checkpoints, two different ones, one input
        assert p.a.model in current and p.b.model in current and p.a.model != p.b.model
        assert current[p.a.model]["asset"] != "filter_ablation" and p.prompt_id.endswith("#seed0")
        assert p.prompt or p.conditioning  # what the models were given is shown to the rater
    store = Store("/")
    [gold, *_] = pools["gold"]
    assert (gold.a.model, gold.b.model, gold.gold_better) == (GOLD_SOURCE, GOLD_DEGRADED, "a")
    source, degraded = (decode_mp4(store.read_bytes(v)).astype(float) for v in (gold.a.video, gold.b.video))
    assert source.shape == degraded.shape
    psnr = 10 * np.log10(255 ** 2 / np.mean((source - degraded) ** 2))
    assert psnr < 20, f"the gold pair's degraded copy is too close to its source ({psnr:.1f} dB)"
    assert campaign["made"]["pairs"] + campaign["made"]["gold_pairs"] == len(tasks.pairs)
    assert "tiny: " in campaign["made"]["models"]  # what the models' weights are is stated (random-init encoders)


def _decide(server, tasks, token: str, choose) -> int:
    """One decision through the page's API as the page sends it (answers as the videos were shown,
    left / right), then the very same request again, as a browser retrying it; `choose(pair)`
    says which task side is better ("a", "b" or "tie"). Returns the retry's HTTP status."""
    import uuid

    import rating_fixtures
    from svd_dag.rating.tasks import media_id

    status, nxt = rating_fixtures.get_json(f"{server.rater_url(token)}/next")
    assert status == 200 and not nxt["done"], nxt
    pair = tasks.pair(nxt["pair"]["pair_id"])
    left = "a" if nxt["pair"]["left"].endswith(media_id(pair.a.video)) else "b"
    better = choose(pair)
    side = "tie" if better == "tie" else "left" if better == left else "right"
    body = {"pair_id": pair.pair_id, "decision_id": uuid.uuid4().hex, "seconds": 2.5,
            "answers": {"visual_quality": side, "prompt_following": side}}
    first, answer = rating_fixtures.post_json(f"{server.rater_url(token)}/vote", body)
    assert (first, answer["status"]) == (200, "stored"), answer
    again, _ = rating_fixtures.post_json(f"{server.rater_url(token)}/vote", body)
    return again


def test_human_votes_from_the_rating_page_rank_the_study_and_lvd_f_adopts_them(campaign):
    cat, tasks, server = campaign["cat"], campaign["tasks"], campaign["server"]
    cells = {m.split("@")[0].split("|")[1]: m for p in tasks.pairs if p.pool == "ablation:motion"
             for m in (p.a.model, p.b.model)}
    favourite = next(level for level in cells if level != campaign["judged"]["level"])  # not what the judge chose

    def choose(pair) -> str:
        if pair.is_gold:
            return pair.gold_better  # attentive raters
        if pair.pool == "ablation:motion":
            return "a" if pair.a.model == cells[favourite] else "b"
        return "tie"

    raters = ("ann", "ben", "cat", "dev")
    retries = [_decide(server, tasks, campaign["tokens"][name], choose) for name in raters for _ in tasks.pairs]
    assert set(retries) == {409}, "a retried vote was stored twice"
    gold = sum(p.is_gold for p in tasks.pairs)
    result = _materialize(campaign["defs"], campaign["instance"], "preference_votes", "filter_ablation_report",
                          run_config=run_config(filter_ablation_report={"rounds": 200}))
    votes = meta_of(result, "preference_votes")
    # one vote per axis of every decision; gold pairs are attention checks, never votes
    assert votes["votes_added"] == 2 * len(raters) * (len(tasks.pairs) - gold) and votes["votes_rejected"] == 0
    results = cat.rows("SELECT * FROM ablation_results WHERE criterion = 'motion' ORDER BY elo DESC")
    assert {r["rater_kind"] for r in results} == {"human"}
    assert results[0]["level"] == favourite and results[0]["model"] == cells[favourite]  # the exact cell rated
    assert results[0]["n_votes"] == 2 * len(raters) * QUICK["probe_clips"]
    [rec] = cat.rows("SELECT * FROM ablation_recommendations WHERE criterion = 'motion'")
    assert (rec["level"], rec["rater_kind"]) == (favourite, "human")
    assert meta_of(result, "filter_ablation_report")["judge"] == "human votes only"

    job = campaign["defs"].resolve_job_def("recuration")
    lvd_f_only = [dg.AssetKey("lvd_f"), dg.AssetKey("lvd_f_eval")]
    try:
        assert job.execute_in_process(instance=campaign["instance"], asset_selection=lvd_f_only, run_config=run_config(
            lvd_f={**KEEP_ALL, "use_ablation_recommendations": True})).success
        latest = cat.rows("SELECT report FROM dataset_versions WHERE asset = 'lvd_f' ORDER BY created_at DESC LIMIT 1")[0]
    finally:  # the session's other tests expect the keep-everything lvd_f
        assert job.execute_in_process(instance=campaign["instance"], asset_selection=lvd_f_only,
                                      run_config=run_config(lvd_f=LVD_F_SESSION)).success
    thresholds = json.loads(latest["report"])["thresholds"]
    assert thresholds["remove_fractions"]["motion"] == LEVELS[favourite]
    assert "human votes" in thresholds["from_ablation"]["motion"]

    # Raters left out (say, for failing the gold pairs) no longer count: with all four out, the judge ranks again.
    result = _materialize(campaign["defs"], campaign["instance"], "filter_ablation_report", run_config=run_config(
        filter_ablation_report={"rounds": 200, "exclude_raters": list(raters)}))
    assert {r["rater_kind"] for r in cat.rows("SELECT rater_kind FROM ablation_results")} == {"judge"}
    assert meta_of(result, "filter_ablation_report")["raters_excluded"] == ", ".join(raters)


def test_a_vote_cast_in_the_browser_is_ingested_and_moves_the_elo_ratings(campaign):
    """A rater in a real browser plays both videos and answers with keys until a pair of two
    checkpoints (pool main) is decided; its vote file is ingested and that pair's ratings move."""
    import ui_servers
    from playwright.sync_api import expect

    from svd_dag.evaluation.votes import list_vote_files, parse_vote_file
    from svd_dag.rating.tasks import media_id
    from svd_dag.storage import Store

    ui_servers.require_browser()
    cat, tasks = campaign["cat"], campaign["tasks"]

    def rated(**config) -> dict:
        """(votes, Elo) per model of the main pool, people's visual-quality votes, as of now."""
        _materialize(campaign["defs"], campaign["instance"], "preference_votes", "elo_ratings",
                     run_config=run_config(elo_ratings={"rounds": 100, "bootstrap": 100, **config}))
        return {r["model"]: (r["n_votes"], r["elo"]) for r in cat.rows(
            "SELECT model, n_votes, elo FROM elo_ratings WHERE pool = 'main' AND axis = 'visual_quality' "
            "AND rater_kind = 'human'")}

    before = rated()
    with ui_servers.open_browser() as browser:
        page = browser.new_page()
        page.goto(campaign["server"].rater_url(campaign["tokens"]["eve"]))
        state = page.locator("#rating")
        for _ in tasks.pairs:
            expect(state).to_have_attribute("data-state", "watching", timeout=30_000)
            left = page.locator("#video-left").get_attribute("src").rsplit("/", 1)[1]
            pair = next(p for p in tasks.pairs if media_id(p.a.video) == left or media_id(p.b.video) == left)
            left_side = "a" if media_id(pair.a.video) == left else "b"
            page.keyboard.press(" ")  # play both; the answers unlock once both have ended
            expect(state).to_have_attribute("data-state", "answering", timeout=30_000)
            better_left = pair.gold_better in (None, left_side)  # gold: the real clip; else the left one
            page.keyboard.press("1" if better_left else "3")  # visual quality
            page.keyboard.press("7" if better_left else "9")  # prompt following
            page.keyboard.press("Enter")
            expect(state).to_have_attribute("data-state", "revealed", timeout=30_000)
            if pair.pool == "main":
                break
            page.keyboard.press("Enter")  # the next pair
        assert browser.blocked == []
    assert pair.pool == "main", "the rater was never shown a pair of two checkpoints"
    votes = Store(campaign["votes"])
    known = {m for p in tasks.pairs for m in (p.a.model, p.b.model)}
    mine = [v for uri in list_vote_files(votes) for v in parse_vote_file(uri, votes.read_bytes(uri), known)[0]
            if v["rater_id"] == "eve" and v["prompt_id"] == pair.prompt_id and v["model_a"] == pair.a.model]
    assert {v["axis"] for v in mine} == {"visual_quality", "prompt_following"}
    assert {v["winner"] for v in mine} == {left_side}

    after = rated()
    winner, loser = (pair.a.model, pair.b.model) if left_side == "a" else (pair.b.model, pair.a.model)
    for model in (winner, loser):
        assert after[model][0] == before.get(model, (0, 0))[0] + 1, (model, before, after)
    gap = {k: v[winner][1] - v[loser][1] if winner in v else 0.0 for k, v in (("before", before), ("after", after))}
    assert gap["after"] > gap["before"], gap  # one more win moves the winner up against the loser
    assert rated(exclude_raters=["eve"]) == before  # her vote left out: the ratings as they were
