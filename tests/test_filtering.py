"""Percentile filtering over a real DuckDB annotation table."""

import duckdb
import numpy as np
import pytest

from svd_dag.curation.filtering import PAPER_REMOVE_FRACTIONS, eval_cut, eval_held_sql, percentile_filter, split_eval


def _kept_ids(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT clip_id FROM filter_outcome WHERE kept ORDER BY clip_id").fetchall()]


@pytest.fixture()
def con():
    c = duckdb.connect()
    rng = np.random.default_rng(0)
    n = 200
    c.execute(
        "CREATE TABLE annotations AS SELECT * FROM (SELECT 'c' || lpad(i::VARCHAR, 4, '0') AS clip_id FROM range(?) t(i))",
        [n],
    )
    for col in ("motion_score", "aesthetic_score", "caption_similarity", "text_area"):
        c.execute(f"ALTER TABLE annotations ADD COLUMN {col} DOUBLE")
    ids = [r[0] for r in c.execute("SELECT clip_id FROM annotations ORDER BY clip_id").fetchall()]
    for cid in ids:
        c.execute(
            "UPDATE annotations SET motion_score = ?, aesthetic_score = ?, caption_similarity = ?, text_area = ? WHERE clip_id = ?",
            [float(v) for v in rng.random(4)] + [cid],
        )
    yield c
    c.close()


@pytest.mark.parametrize("criterion, column", [("motion", "motion_score"), ("aesthetics", "aesthetic_score"),
                                               ("caption_similarity", "caption_similarity"), ("text", "text_area")])
@pytest.mark.parametrize("fraction", [0.125, 0.25, 0.5])
def test_each_criterion_removes_the_expected_fraction_of_the_worst(con, criterion, column, fraction):
    r = percentile_filter(con, {criterion: fraction})
    assert r.removed[criterion] == int(fraction * 200)
    assert r.kept == 200 - int(fraction * 200) == len(_kept_ids(con))
    kept_values = [v for (v,) in con.execute(f"SELECT {column} FROM annotations WHERE clip_id IN (SELECT unnest(?))", [_kept_ids(con)]).fetchall()]
    removed_values = [v for (v,) in con.execute(f"SELECT {column} FROM annotations WHERE clip_id NOT IN (SELECT unnest(?))", [_kept_ids(con)]).fetchall()]
    if criterion == "text":  # most text is worst
        assert min(removed_values) > max(kept_values)
        assert r.cutoffs["text"] == pytest.approx(max(kept_values))
    else:
        assert max(removed_values) < min(kept_values)
        assert r.cutoffs[criterion] == pytest.approx(min(kept_values))


def test_paper_defaults_combine_criteria(con):
    r = percentile_filter(con, PAPER_REMOVE_FRACTIONS)
    assert r.removed == {"motion": 50, "aesthetics": 50, "caption_similarity": 100, "text": 50}
    # independent criteria: a clip survives with probability 0.75^3 * 0.5
    assert 0.1 * 200 < r.kept < 0.32 * 200
    decisions = {(c, k): d for c, k, d in con.execute("SELECT clip_id, criterion, decision FROM filter_decision_rows").fetchall()}
    assert len(decisions) == 4 * 200
    for cid in _kept_ids(con):
        assert all(decisions[(cid, c)] == "kept" for c in PAPER_REMOVE_FRACTIONS)
    removed = {c for (c, k), d in decisions.items() if d == "removed"}
    assert removed == {r[0] for r in con.execute("SELECT clip_id FROM annotations").fetchall()} - set(_kept_ids(con))


def test_unscored_clips_are_not_counted_as_low_scores(con):
    con.execute("UPDATE annotations SET motion_score = NULL WHERE clip_id IN ('c0000', 'c0001')")
    r = percentile_filter(con, {"motion": 0.25})
    assert r.unscored["motion"] == 2
    assert r.removed["motion"] == int(0.25 * 198)
    assert "c0000" not in _kept_ids(con)
    assert con.execute("SELECT decision FROM filter_decision_rows WHERE clip_id = 'c0000'").fetchone()[0] == "unscored"


def test_ties_at_the_cutoff_are_all_kept(con):
    con.execute("UPDATE annotations SET text_area = 0.0")
    r = percentile_filter(con, {"text": 0.25})
    assert r.removed["text"] == 0 and r.kept == 200


def test_absolute_text_limit(con):
    r = percentile_filter(con, {"text": 0.0}, absolute_max_text_area=0.9)
    over = con.execute("SELECT count(*) FROM annotations WHERE text_area > 0.9").fetchone()[0]
    assert r.removed["text"] == over > 0


@pytest.mark.parametrize("bad, message", [({"sharpness": 0.1}, "unknown filter criteria"), ({"motion": 1.0}, r"\[0, 1\)"),
                                          ({"motion": "0.2; DROP TABLE annotations"}, "must be in")])
def test_bad_thresholds_are_rejected(con, bad, message):
    with pytest.raises(ValueError, match=message):
        percentile_filter(con, bad)
    assert con.execute("SELECT count(*) FROM annotations").fetchone()[0] == 200


@pytest.mark.parametrize("fraction, seed", [(0.25, "eval"), (0.1, "eval-2"), (0.0, "eval")])
def test_the_sql_eval_split_is_the_python_one(con, fraction, seed):
    ids = [r[0] for r in con.execute("SELECT clip_id FROM annotations ORDER BY clip_id").fetchall()]
    held_sql = [r[0] for r in con.execute(f"SELECT clip_id FROM annotations WHERE {eval_held_sql('clip_id')} "
                                          "ORDER BY clip_id", [seed, eval_cut(fraction)]).fetchall()]
    assert held_sql == split_eval(ids, fraction, seed=seed)[1]
    assert (len(held_sql) > 0) == (fraction > 0)


def test_eval_split_by_video_keeps_each_video_on_one_side_and_is_stable():
    clips = [f"v{v}-c{c}" for v in range(40) for c in range(5)]
    groups = {c: c.split("-")[0] for c in clips}
    train, held = split_eval(clips, 0.25, groups)
    assert {groups[c] for c in train}.isdisjoint({groups[c] for c in held})
    assert 4 <= len({groups[c] for c in held}) <= 18  # ~10 of 40 videos
    assert split_eval(clips[::-1], 0.25, groups)[1] == held[::-1]  # order does not choose the side
    by_clip = split_eval(clips, 0.25)[1]
    assert len({groups[c] for c in by_clip}) > len({groups[c] for c in held})  # per clip: spread over more videos


def test_eval_seed_draws_another_stable_split_of_the_same_size():
    ids = [f"clip-{i}" for i in range(400)]
    base_train, base_eval = split_eval(ids, 0.25)
    other_train, other_eval = split_eval(ids, 0.25, seed="eval-2")
    assert split_eval(ids, 0.25, seed="eval-2") == (other_train, other_eval)  # stable
    assert set(other_eval) != set(base_eval)
    assert 70 <= len(other_eval) <= 130 and 70 <= len(base_eval) <= 130
    assert sorted(other_train + other_eval) == sorted(ids)
