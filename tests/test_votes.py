"""Preference votes: parsing and validation, model naming, ratings per rater kind, and the
preference_votes -> elo_ratings assets against vote files on a real S3 server (moto's) and
the trained stage checkpoints, read back from the catalog and from MLflow."""

import dataclasses
import datetime as dt
import io
import json

import dagster as dg
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import STAGES, meta_of
from svd_dag.definitions import build_defs
from svd_dag.evaluation.votes import (VoteFileError, leaderboard_rows, model_aliases, parse_vote_file, parse_time,
                                      rater_kind)
from svd_dag.jobs.evaluation import new_vote_files_sensor
from svd_dag.resources import StorageResource
from svd_dag.storage import Store

HEADER = "prompt_id,model_a,model_b,winner,axis,rater_id,time,pool\n"


def _csv(*lines: str) -> bytes:
    return (HEADER + "".join(line + "\n" for line in lines)).encode()


# --- domain ---

def test_good_rows_are_kept_and_each_bad_row_is_rejected_with_its_reason():
    data = _csv("p1,m1,m2,a,visual_quality,r1,2024-05-01T12:00:00+02:00,",
                "p2,m2,m1, TIE ,prompt_following,r2,1714557600,pool-b",
                "p3,m1,m1,a,visual_quality,r1,2024-05-01,",
                "p4,m1,sora,a,visual_quality,r1,2024-05-01,",
                "p5,m1,m2,c,visual_quality,r1,2024-05-01,",
                "p6,m1,m2,a,looks,r1,2024-05-01,",
                "p7,m1,m2,a,visual_quality,r1,yesterday,",
                "p8,m1,m2,a,visual_quality,,2024-05-01,",
                "p9,m1,m2,b,visual_quality,r1,2024-05-01,main,surplus",
                "p10,m1,m2,b,visual_quality,r1,2024-05-01,pool b")
    valid, rejected = parse_vote_file("vendor/batch1.csv", data, {"m1", "m2"})

    assert [(v["prompt_id"], v["winner"], v["pool"], v["time"], v["row_number"]) for v in valid] == [
        ("p1", "a", "main", dt.datetime(2024, 5, 1, 10, 0), 1),  # +02:00 stored as UTC
        ("p2", "tie", "pool-b", dt.datetime(2024, 5, 1, 10, 0), 2)]  # epoch seconds
    assert [r["reason"] for r in rejected] == [
        "vendor/batch1.csv row 3: model_a and model_b are both 'm1': a model against itself",
        "vendor/batch1.csv row 4: model_b 'sora' is not a known model",
        "vendor/batch1.csv row 5: winner 'c' is not one of a, b, tie",
        "vendor/batch1.csv row 6: axis 'looks' is not one of visual_quality, prompt_following",
        "vendor/batch1.csv row 7: time 'yesterday' is not ISO 8601 or a timestamp (Invalid isoformat string: 'yesterday')",
        "vendor/batch1.csv row 8: missing value in column rater_id",
        "vendor/batch1.csv row 9: 1 more cell(s) than the header has columns",
        "vendor/batch1.csv row 10: pool 'pool b' may only hold letters, digits, '_', '.', ':' and '-'",
    ]
    assert rejected[1]["model_b"] == "sora" and rejected[1]["row_number"] == 4  # raw fields travel with the reason


def test_the_curation_studys_pools_are_valid_and_every_vote_has_a_stable_id():
    """`ablation:<criterion>` pools (what filter_ablation_report reads human votes from) are
    accepted; a vote's id is its file's `vote_id`, else one made from the file's path and row."""
    data = _csv("p1,m1,m2,a,visual_quality,r1,2024-05-01,ablation:motion",
                "p2,m1,m2,b,visual_quality,r1,2024-05-01,ablation:aesthetics")
    valid, rejected = parse_vote_file("s3://votes/v/a.csv", data, {"m1", "m2"}, source="v/a.csv")
    assert rejected == [] and [v["pool"] for v in valid] == ["ablation:motion", "ablation:aesthetics"]
    again, _ = parse_vote_file("s3://votes/v/a.csv", data + b"p3,m1,m2,a,visual_quality,r1,2024-05-01,\n",
                               {"m1", "m2"}, source="v/a.csv")
    assert [v["vote_id"] for v in again][:2] == [v["vote_id"] for v in valid]  # a grown file keeps its ids
    other, _ = parse_vote_file("s3://votes/v/b.csv", data, {"m1", "m2"}, source="v/b.csv")
    assert not {v["vote_id"] for v in other} & {v["vote_id"] for v in valid}  # same bytes, other votes
    from svd_dag.evaluation.votes import pool_metric_key

    assert pool_metric_key("ablation:motion") == "ablation.motion"


def test_parquet_votes_with_typed_columns_and_no_pool_column():
    table = pa.table({"prompt_id": [7, 8], "model_a": ["m1", "m2"], "model_b": ["m2", "m1"], "winner": ["b", "a"],
                      "axis": ["visual_quality"] * 2, "rater_id": ["judge:vlm-1", "alice"],
                      "time": pa.array([dt.datetime(2024, 5, 1, 10), None], pa.timestamp("ms", tz="UTC"))})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    valid, rejected = parse_vote_file("votes.parquet", buf.getvalue(), {"m1", "m2"})
    assert [(v["prompt_id"], v["pool"], v["rater_kind"], v["time"]) for v in valid] == [
        ("7", "main", "judge", dt.datetime(2024, 5, 1, 10))]
    assert [r["reason"] for r in rejected] == ["votes.parquet row 2: missing value in column time"]


@pytest.mark.parametrize("name, data, reason", [
    ("empty.csv", b"", "zero bytes"),
    ("notes.txt", b"prompt_id,model_a\n", "not a CSV (.csv) or Parquet file"),
    ("cut.parquet", b"PAR1\x00\x01garbage", "not a readable Parquet file"),
    ("old.csv", b"prompt,left,right,choice\np1,m1,m2,left\n", "missing required column(s) prompt_id, model_a"),
    ("latin1.csv", HEADER.encode() + "p1,m\xe9,m2,a,visual_quality,r,2024-05-01,\n".encode("latin-1"), "not UTF-8"),
])
def test_unreadable_files_raise_naming_the_file_and_the_reason(name, data, reason):
    with pytest.raises(VoteFileError) as info:
        parse_vote_file(f"s3://votes/in/{name}", data, {"m1", "m2"})
    assert str(info.value).startswith(f"s3://votes/in/{name}: ") and reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_judges_are_told_from_humans():
    assert [rater_kind(r) for r in ("judge:gpt-4o", "judge:", "alice", "Judge:x", "human:judge:x")] == \
        ["judge", "judge", "human", "human", "human"]


def test_time_parsing_known_answers():
    assert parse_time("2024-05-01T10:00:00Z") == dt.datetime(2024, 5, 1, 10)
    assert parse_time("2024-05-01 10:00") == dt.datetime(2024, 5, 1, 10)  # no zone: UTC
    assert parse_time(0) == dt.datetime(1970, 1, 1)
    with pytest.raises(ValueError):
        parse_time("1e30")


def test_model_names_resolve_to_one_canonical_id_per_checkpoint():
    rows = [{"asset": "stage1", "variant": "", "data_version": "v1", "created_at": dt.datetime(2024, 1, 1)},
            {"asset": "stage1", "variant": "", "data_version": "v2", "created_at": dt.datetime(2024, 2, 1)},
            {"asset": "loras", "variant": "zoom", "data_version": "vz", "created_at": dt.datetime(2024, 1, 1)}]
    assert model_aliases(rows) == {
        "stage1@v1": "stage1@v1", "v1": "stage1@v1", "stage1@v2": "stage1@v2", "v2": "stage1@v2",
        "stage1": "stage1@v2",  # the newest
        "loras:zoom@vz": "loras:zoom@vz", "vz": "loras:zoom@vz", "loras@vz": "loras:zoom@vz", "loras:zoom": "loras:zoom@vz",
    }
    valid, rejected = parse_vote_file("a.csv", _csv("p,stage1,v2,a,visual_quality,r,2024-05-01,",
                                                    "p,stage1,stage1@v1,a,visual_quality,r,2024-05-01,"),
                                      model_aliases(rows))
    assert [(v["model_a_id"], v["model_b_id"]) for v in valid] == [("stage1@v2", "stage1@v1")]
    assert rejected[0]["reason"] == ("a.csv row 1: model_a 'stage1' and model_b 'v2' name the same model "
                                     "'stage1@v2': a model against itself")


def test_a_bare_asset_name_means_the_checkpoint_that_was_current_when_the_vote_was_cast():
    from svd_dag.evaluation.votes import ModelNames

    rows = [{"asset": "stage1", "variant": "", "data_version": "v1", "created_at": dt.datetime(2024, 1, 1)},
            {"asset": "stage1", "variant": "", "data_version": "v2", "created_at": dt.datetime(2024, 2, 1)},
            {"asset": "stage2", "variant": "", "data_version": "w1", "created_at": dt.datetime(2024, 1, 1)}]
    valid, rejected = parse_vote_file("a.csv", _csv("p,stage1,stage2,a,visual_quality,r,2024-01-15,",
                                                    "p,stage1,stage2,a,visual_quality,r,2024-03-01,",
                                                    "p,stage1,stage2,a,visual_quality,r,2023-12-01,",
                                                    "p,stage1@v1,stage2,a,visual_quality,r,2024-03-01,"),
                                      ModelNames(rows))
    assert [(v["row_number"], v["model_a_id"]) for v in valid] == [(1, "stage1@v1"), (2, "stage1@v2"), (4, "stage1@v1")]
    assert [r["reason"] for r in rejected] == [
        "a.csv row 3: model_a 'stage1' names no checkpoint that existed at 2023-12-01 00:00 UTC (the first stage1 "
        "is from 2024-01-01 00:00): name its version, stage1@<data_version>"]


def test_leaderboards_keep_judges_apart_with_known_elo():
    vote = {"pool": "main", "axis": "visual_quality", "model_a_id": "x", "model_b_id": "y"}
    rows = leaderboard_rows([{**vote, "rater_kind": "human", "winner": "a"},
                             {**vote, "rater_kind": "judge", "winner": "b"}], rounds=10, bootstrap=10)
    # One vote, K=1, equal start: expected score 0.5, so the winner gains exactly 0.5.
    assert [(r["rater_kind"], r["model"], r["elo"], r["n_votes"]) for r in rows] == [
        ("human", "x", 1000.5, 1), ("human", "y", 999.5, 1), ("judge", "y", 1000.5, 1), ("judge", "x", 999.5, 1)]


def test_sensor_requests_a_run_only_when_vote_files_change(tmp_path):
    resources = {"votes_storage": StorageResource(uri=str(tmp_path / "votes"))}
    assert isinstance(new_vote_files_sensor(dg.build_sensor_context(resources=resources)), dg.SkipReason)  # no folder
    (tmp_path / "votes").mkdir()
    (tmp_path / "votes" / "a.csv").write_bytes(_csv())
    first = new_vote_files_sensor(dg.build_sensor_context(resources=resources))
    assert isinstance(first, dg.RunRequest)
    assert isinstance(new_vote_files_sensor(dg.build_sensor_context(cursor=first.run_key, resources=resources)),
                      dg.SkipReason)
    (tmp_path / "votes" / "a.csv").write_bytes(_csv("p,m1,m2,a,visual_quality,r,2024-05-01,"))  # same name, new size
    changed = new_vote_files_sensor(dg.build_sensor_context(cursor=first.run_key, resources=resources))
    assert isinstance(changed, dg.RunRequest) and changed.run_key != first.run_key


# --- through Dagster, against S3 and the trained checkpoints ---

def _pair_votes(ranking: list[str], names: dict[str, str], axis: str, rater: str) -> list[dict]:
    """Per pair of models, 10 prompts: the better one (earlier in `ranking`) wins 8, loses 1,
    ties 1, shown on alternating sides."""
    votes = []
    for i, better in enumerate(ranking):
        for worse in ranking[i + 1:]:
            for p, outcome in enumerate(["win"] * 8 + ["loss", "tie"]):
                left, right = (better, worse) if p % 2 == 0 else (worse, better)
                winner = "tie" if outcome == "tie" else ("a" if (left == better) == (outcome == "win") else "b")
                votes.append({"prompt_id": f"{axis}-{better}-{worse}-{p}", "model_a": names[left],
                              "model_b": names[right], "winner": winner, "axis": axis, "rater_id": rater,
                              "time": f"2030-05-0{1 + p % 9}T10:00:00Z"})
    return votes


def _csv_with_ids(rows: list[dict]) -> bytes:
    columns = ["vote_id"] + HEADER.strip().split(",")
    return "".join(",".join(str(r.get(c, "")) for c in columns) + "\n"
                   for r in [dict(zip(columns, columns)), *rows]).encode()


def _to_csv(rows: list[dict]) -> bytes:
    return _csv(*(",".join(str(r.get(c, "")) for c in HEADER.strip().split(",")) for r in rows))


@pytest.fixture(scope="module")
def evaluated(s3_endpoint, curated, trained, tmp_path_factory):
    cat = curated["cat"]
    newest = {a: cat.rows("SELECT * FROM checkpoints WHERE asset = ? AND variant = '' ORDER BY created_at DESC LIMIT 1",
                          [a])[0] for a in STAGES}
    best_first = list(reversed(STAGES))  # stage3 > stage2 > stage1
    by_asset = {a: a for a in STAGES}
    by_version = {a: f"{a}@{newest[a]['data_version']}" if a != STAGES[0] else newest[a]["data_version"] for a in STAGES}

    humans = _pair_votes(best_first, by_asset, "visual_quality", "rater-17")
    judges = _pair_votes(STAGES, by_asset, "visual_quality", "judge:vlm-a")  # the judge prefers the reverse
    bad = [{"prompt_id": "x1", "model_a": STAGES[0], "model_b": "sora", "winner": "a", "axis": "visual_quality",
            "rater_id": "r", "time": "2030-05-01"},
           {"prompt_id": "x2", "model_a": STAGES[0], "model_b": STAGES[1], "winner": "left", "axis": "visual_quality",
            "rater_id": "r", "time": "2030-05-01"},
           {"prompt_id": "x3", "model_a": STAGES[0], "model_b": STAGES[1], "winner": "a", "axis": "visual_quality",
            "rater_id": "r", "time": "last tuesday"}]
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_pair_votes(best_first, by_version, "prompt_following", "rater-03")), parquet)

    votes = Store("s3://votes/incoming")
    votes.fs.mkdir("votes")
    votes.write_bytes("vendor-a/batch1.csv", _to_csv(humans + bad + judges))
    votes.write_bytes("vendor-b/batch1.parquet", parquet.getvalue())
    votes.write_bytes("vendor-b/batch2.parquet", b"this is not parquet")

    settings = dataclasses.replace(curated["settings"], votes_uri="s3://votes/incoming")
    defs = build_defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("evaluation").execute_in_process(instance=instance)
    assert result.success
    return {"defs": defs, "instance": instance, "result": result, "cat": cat, "store": votes, "newest": newest,
            "batch1": humans + bad + judges,
            "settings": settings, "canonical": {a: f"{a}@{newest[a]['data_version']}" for a in STAGES}}


def test_votes_are_ingested_bad_rows_rejected_and_a_broken_file_quarantined(evaluated):
    cat, meta = evaluated["cat"], meta_of(evaluated["result"], "preference_votes")
    assert {k: meta[k] for k in ("files_seen", "files_new", "files_skipped", "files_broken", "votes_added",
                                 "votes_rejected", "dagster/row_count")} == {
        "files_seen": 3, "files_new": 2, "files_skipped": 0, "files_broken": 1, "votes_added": 90,
        "votes_rejected": 3, "dagster/row_count": 90}
    assert meta["added_by_axis_and_rater_kind"] == {"prompt_following/human": 30, "visual_quality/human": 30,
                                                    "visual_quality/judge": 30}
    per_file = cat.rows("SELECT source_file, count(*) AS n FROM preference_votes GROUP BY 1 ORDER BY 1")
    assert per_file == [{"source_file": "s3://votes/incoming/vendor-a/batch1.csv", "n": 60},
                        {"source_file": "s3://votes/incoming/vendor-b/batch1.parquet", "n": 30}]
    # Parquet votes named models by version; they resolve to the same checkpoints as the CSV's asset names.
    ids = cat.rows("SELECT DISTINCT model_a_id AS m FROM preference_votes ORDER BY 1")
    assert [r["m"] for r in ids] == sorted(evaluated["canonical"].values())

    rejected = cat.rows("SELECT prompt_id, row_number, reason FROM rejected_votes ORDER BY row_number")
    prefix = "s3://votes/incoming/vendor-a/batch1.csv row"
    assert rejected == [
        {"prompt_id": "x1", "row_number": 31, "reason": f"{prefix} 31: model_b 'sora' is not a known model"},
        {"prompt_id": "x2", "row_number": 32, "reason": f"{prefix} 32: winner 'left' is not one of a, b, tie"},
        {"prompt_id": "x3", "row_number": 33,
         "reason": f"{prefix} 33: time 'last tuesday' is not ISO 8601 or a timestamp (Invalid isoformat string: 'last tuesday')"},
    ]
    [quarantined] = cat.quarantined("preference_votes")
    assert quarantined["uri"] == "s3://votes/incoming/vendor-b/batch2.parquet"
    assert "not a readable Parquet file" in quarantined["reason"]


def test_a_clear_winner_comes_first_and_judges_are_rated_apart(evaluated):
    cat, canonical = evaluated["cat"], evaluated["canonical"]
    ratings = cat.rows("SELECT * FROM elo_ratings ORDER BY pool, axis, rater_kind, elo DESC")
    groups = {}
    for r in ratings:
        groups.setdefault((r["pool"], r["axis"], r["rater_kind"]), []).append(r)
    assert sorted(groups) == [("main", "prompt_following", "human"), ("main", "visual_quality", "human"),
                              ("main", "visual_quality", "judge")]
    human_order = [canonical[a] for a in reversed(STAGES)]
    for key, expected in [(("main", "prompt_following", "human"), human_order),
                          (("main", "visual_quality", "human"), human_order),
                          (("main", "visual_quality", "judge"), list(reversed(human_order)))]:
        rows = groups[key]
        assert [r["model"] for r in rows] == expected, key
        assert [r["model"] for r in sorted(rows, key=lambda r: -r["bt"])] == expected, key  # Bradley-Terry agrees
        assert all(r["elo_low"] <= r["elo"] <= r["elo_high"] and r["bt_low"] <= r["bt"] <= r["bt_high"] for r in rows)
        assert [r["n_votes"] for r in rows] == [20, 20, 20]
        assert rows[0]["rank"] == 1 and rows[-1]["rank"] > 1  # 8 of 10 wins per pair: intervals separate
        # K=1 Elo moves half a point per even vote: the winner ends a few points above 1000
        assert 1000 < rows[0]["elo"] < 1010 and 990 < rows[-1]["elo"] < 1000
    meta = meta_of(evaluated["result"], "elo_ratings")
    assert f"| 1 | {human_order[0]} |" in meta["leaderboard_main_visual_quality_human"]
    assert meta["models_not_in_checkpoints"] == "-"


def test_ratings_are_logged_to_mlflow_on_each_checkpoints_logged_model(evaluated, tmp_path):
    cat, newest = evaluated["cat"], evaluated["newest"]
    client = mlflow.MlflowClient(evaluated["settings"].mlflow_tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("svd-dag").experiment_id],
                               f"tags.`dagster.run_id` = '{evaluated['result'].run_id}'")
    assert run.data.tags["dagster.asset"] == "elo_ratings"
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["elo_ratings.json"]
    with open(client.download_artifacts(run.info.run_id, "elo_ratings.json", str(tmp_path))) as f:
        artefact = json.load(f)
    assert sorted((r["rater_kind"], r["axis"], r["model"], r["elo"]) for r in artefact) == sorted(
        (r["rater_kind"], r["axis"], r["model"], r["elo"]) for r in cat.rows("SELECT * FROM elo_ratings"))
    for asset in STAGES:
        model = client.get_logged_model(newest[asset]["mlflow_model_id"])
        logged = {m.key: m for m in model.metrics or [] if m.run_id == run.info.run_id}
        assert set(logged) == {f"{p}elo_{axis}{s}" for p, axis in [("", "visual_quality"), ("", "prompt_following"),
                                                                    ("proxy_", "visual_quality")]
                               for s in ("", "_low", "_high")}
        expected = cat.rows("SELECT rater_kind, axis, elo, elo_high FROM elo_ratings WHERE model = ?",
                            [evaluated["canonical"][asset]])
        for r in expected:
            key = ("proxy_" if r["rater_kind"] == "judge" else "") + f"elo_{r['axis']}"
            assert logged[key].value == pytest.approx(r["elo"]) and logged[key + "_high"].value == pytest.approx(r["elo_high"])
            assert logged[key].dataset_name == "preference_votes" and logged[key].model_id == model.model_id


def test_nothing_is_counted_twice_and_a_fixed_file_gets_in(evaluated):
    job, instance, cat, store = (evaluated["defs"].resolve_job_def("evaluation"), evaluated["instance"],
                                 evaluated["cat"], evaluated["store"])
    votes_only = [dg.AssetKey("preference_votes")]

    again = job.execute_in_process(instance=instance)
    meta = meta_of(again, "preference_votes")
    assert (meta["files_new"], meta["files_skipped"], meta["files_broken"], meta["votes_added"]) == (0, 2, 1, 0)
    assert cat.rows("SELECT count(*) AS n FROM preference_votes")[0]["n"] == 90
    assert cat.rows("SELECT count(*) AS n FROM rejected_votes")[0]["n"] == 3
    assert meta_of(again, "elo_ratings")["votes"] == 90

    # A file that grew: only its new rows are votes (the others keep their ids).
    grown = _to_csv(evaluated["batch1"] + [{"prompt_id": f"grown-{i}", "model_a": STAGES[2], "model_b": STAGES[1],
                                             "winner": "a", "axis": "visual_quality", "rater_id": "rater-17",
                                             "time": "2030-05-03T09:00:00Z"} for i in range(2)])
    store.write_bytes("vendor-a/batch1.csv", grown)
    meta = meta_of(job.execute_in_process(instance=instance, asset_selection=votes_only), "preference_votes")
    assert (meta["files_new"], meta["votes_added"], meta["votes_already_counted"]) == (1, 2, 60)
    # Two files with the same bytes are two votes (two raters may well agree on one pair).
    one = _to_csv([{"prompt_id": "same", "model_a": STAGES[2], "model_b": STAGES[0], "winner": "a",
                    "axis": "visual_quality", "rater_id": "rater-5", "time": "2030-05-04T09:00:00Z"}])
    store.write_bytes("vendor-c/one-a.csv", one)
    store.write_bytes("vendor-c/one-b.csv", one)
    # Votes with ids re-packaged into another file are counted once; a staging name and a hidden
    # file (an upload still in flight) are not vote files at all.
    with_ids = [{"vote_id": f"page-{i}", "prompt_id": f"p{i}", "model_a": STAGES[2], "model_b": STAGES[1],
                 "winner": "a", "axis": "prompt_following", "rater_id": "rater-9", "time": "2030-05-05T09:00:00Z"}
                for i in range(3)]
    store.write_bytes("vendor-d/day1.csv", _csv_with_ids(with_ids))
    store.write_bytes("vendor-d/.upload-in-flight.csv", _csv_with_ids(with_ids))
    store.write_bytes("vendor-d/day1.csv.tmp-0123abcd", _csv_with_ids(with_ids))
    meta = meta_of(job.execute_in_process(instance=instance, asset_selection=votes_only), "preference_votes")
    assert (meta["files_seen"], meta["files_new"], meta["votes_added"]) == (6, 3, 5)
    store.write_bytes("vendor-d/all-of-week1.csv", _csv_with_ids(with_ids[::-1]))
    meta = meta_of(job.execute_in_process(instance=instance, asset_selection=votes_only), "preference_votes")
    assert (meta["files_new"], meta["votes_added"], meta["votes_already_counted"]) == (1, 0, 3)
    assert cat.rows("SELECT count(*) AS n FROM preference_votes")[0]["n"] == 97
    assert cat.rows("SELECT count(DISTINCT vote_id) AS n FROM preference_votes")[0]["n"] == 97

    fixed = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt_id": "late-1", "model_a": STAGES[2], "model_b": STAGES[0],
                                          "winner": "a", "axis": "visual_quality", "rater_id": "rater-17",
                                          "time": "2030-05-02T09:00:00Z"}]), fixed)
    store.write_bytes("vendor-b/batch2.parquet", fixed.getvalue())
    meta = meta_of(job.execute_in_process(instance=instance, asset_selection=votes_only), "preference_votes")
    assert (meta["files_new"], meta["files_broken"], meta["votes_added"], meta["dagster/row_count"]) == (1, 0, 1, 98)
    assert cat.quarantined("preference_votes") == []
