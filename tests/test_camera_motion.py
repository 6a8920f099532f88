"""The camera-motion rule in SQL (what `camera_motion_labels` runs in the catalog) gives every
clip the label the Python rule gives it: random flow descriptors, values on the thresholds,
missing and NaN descriptors, and a non-default rule."""

import math
import random

import duckdb
import pytest

from svd_dag.curation.camera_motion import LABELS, OTHER, CameraRule, camera_label, label_sql

RULES = [CameraRule(), CameraRule(static_max_px=0.5, zoom_min_px=2.5, pan_min_px=0.75, pan_axis_ratio=3.0,
                                  pan_coherence=0.8)]


def _descriptors(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        dx, dy = rng.uniform(-6, 6), rng.uniform(-6, 6)
        score = math.hypot(dx, dy) / rng.uniform(0.2, 1.0)  # the mean magnitude is at least the mean vector
        rows.append((rng.choice([score, rng.uniform(0, 0.6)]), dx, dy, rng.choice([rng.uniform(-0.05, 0.05), 0.0])))
    rows += [  # on the default thresholds, and what the rule must call "other"
        (0.3, 0.0, 0.0, 0.0), (0.29999, 0.0, 0.0, 0.0), (1.0, 1.0, 0.5, 0.0), (1.0, -1.0, 0.5, 0.0),
        (2.0, 0.0, 0.0, 1 / 80), (2.0, 0.0, 0.0, -1 / 80), (5.0, 4.0, 2.0, 0.0),
        (None, 1.0, 0.0, 0.0), (1.0, None, 0.0, 0.0), (1.0, 0.0, None, 0.0), (1.0, 0.0, 0.0, None),
        (float("nan"), 1.0, 0.0, 0.0), (1.0, 1.0, float("nan"), 0.0), (None, None, None, None),
    ]
    return rows


@pytest.mark.parametrize("rule", RULES, ids=["default", "custom"])
def test_the_sql_rule_labels_every_clip_as_the_python_rule_does(rule):
    rows = _descriptors(7, 3000)
    con = duckdb.connect()
    con.execute("CREATE TABLE annotations (i INTEGER, motion_score DOUBLE, mean_dx DOUBLE, mean_dy DOUBLE, "
                "divergence DOUBLE)")
    con.executemany("INSERT INTO annotations VALUES (?, ?, ?, ?, ?)", [(i, *r) for i, r in enumerate(rows)])
    got = dict(con.execute(f"SELECT i, {label_sql(rule)} FROM annotations").fetchall())
    expected = {i: camera_label(*r, rule) for i, r in enumerate(rows)}
    assert got == expected
    assert set(expected.values()) == {*LABELS, OTHER}  # the sample reaches every branch of the rule


def test_the_sql_rule_refuses_a_rule_that_is_not_positive_numbers():
    with pytest.raises(ValueError, match="pan_axis_ratio must be a positive number"):
        label_sql(CameraRule(pan_axis_ratio=float("nan")))


def test_label_clips_builds_the_table_counts_and_a_digest_that_follows_the_labels():
    from svd_dag.curation.camera_motion import label_clips

    con = duckdb.connect()
    con.execute("CREATE TABLE annotations AS SELECT * FROM (VALUES ('c1', 0.1, 0.0, 0.0, 0.0), "
                "('c2', 3.0, 2.5, 0.1, 0.0), ('c3', 2.0, 0.0, 0.0, 0.05), ('c4', NULL, NULL, NULL, NULL)) "
                "AS t(clip_id, motion_score, mean_dx, mean_dy, divergence)")
    counts, digest, n = label_clips(con)
    assert (counts, n) == ({"static": 1, "horizontal_pan": 1, "zoom": 1, "other": 1}, 4)
    rows = con.execute("SELECT clip_id, label, rule FROM camera_motion_labels ORDER BY clip_id").fetchall()
    assert [r[:2] for r in rows] == [("c1", "static"), ("c2", "horizontal_pan"), ("c3", "zoom"), ("c4", "other")]
    assert {r[2] for r in rows} == {CameraRule().describe()}
    assert label_clips(con)[1] == digest  # the same labels, the same version
    con.execute("UPDATE annotations SET motion_score = 0.1 WHERE clip_id = 'c2'")
    assert label_clips(con)[1] != digest
