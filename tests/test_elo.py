"""Elo and Bradley-Terry ratings from pairwise votes: recovery, ties, an independent fit, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from svd_dag.evaluation.elo import bradley_terry, elo_ratings, votes_from_dicts

MODELS = ["m0", "m1", "m2", "m3", "m4"]
TRUE_ELO = np.array([0.0, 100.0, 200.0, 300.0, 400.0])


def _simulated_votes(n: int = 3000, tie_rate: float = 0.1, seed: int = 0) -> list[tuple[str, str, str]]:
    """Votes drawn from Bradley-Terry with TRUE_ELO strengths, plus some ties."""
    rng = np.random.default_rng(seed)
    votes = []
    for _ in range(n):
        i, j = rng.choice(len(MODELS), size=2, replace=False)
        p_i = 1.0 / (1.0 + 10 ** ((TRUE_ELO[j] - TRUE_ELO[i]) / 400))
        winner = "tie" if rng.random() < tie_rate else ("a" if rng.random() < p_i else "b")
        votes.append((MODELS[i], MODELS[j], winner))
    return votes


def test_both_methods_recover_the_true_order():
    votes = _simulated_votes()
    elo = elo_ratings(votes, rounds=1000)
    bt = bradley_terry(votes, bootstrap=300)
    assert sorted(MODELS, key=lambda m: elo[m].mean) == MODELS
    assert sorted(MODELS, key=lambda m: bt[m].rating) == MODELS
    assert [bt[m].rank for m in MODELS] == [5, 4, 3, 2, 1]  # 100 Elo apart: no overlapping intervals
    assert all(elo[m].ci_low <= elo[m].mean <= elo[m].ci_high for m in MODELS)
    assert all(bt[m].ci_low <= bt[m].rating <= bt[m].ci_high for m in MODELS)
    assert sum(elo[m].n_votes for m in MODELS) == 2 * len(votes)
    # Bradley-Terry is the generating model: its gaps come back near 100 (ties shrink them a bit).
    gaps = np.diff([bt[m].rating for m in MODELS])
    assert np.all((gaps > 60) & (gaps < 140))
    assert math.prod(10 ** ((bt[m].rating - 1000) / 400) for m in MODELS) == pytest.approx(1.0)  # geometric mean


def test_single_elo_update_known_answer():
    ratings = elo_ratings([("x", "y", "a")], k=32, rounds=1)
    # Equal ratings: expected score 0.5, so the winner gains K/2 = 16.
    assert ratings["x"].mean == pytest.approx(1016.0) and ratings["y"].mean == pytest.approx(984.0)


def test_only_ties_give_equal_ratings():
    ties = [("a", "b", "tie"), ("b", "c", "tie"), ("c", "a", "tie"), ("a", "b", "tie")]
    elo = elo_ratings(ties, k=4, rounds=50)
    bt = bradley_terry(ties, bootstrap=50)
    assert all(result.mean == 1000.0 and result.ci_low == result.ci_high == 1000.0 for result in elo.values())
    assert all(result.rating == pytest.approx(1000.0, abs=1e-9) for result in bt.values())
    assert {result.rank for result in bt.values()} == {1}


def test_one_win_and_one_loss_equal_two_ties():
    base = [("a", "c", "a"), ("b", "c", "a"), ("c", "a", "tie"), ("b", "a", "b")] * 3
    split = bradley_terry(base + [("a", "b", "a"), ("a", "b", "b")], bootstrap=20)
    tied = bradley_terry(base + [("a", "b", "tie"), ("b", "a", "tie")], bootstrap=20)
    for model in "abc":
        assert split[model].rating == pytest.approx(tied[model].rating, abs=1e-9)

    # Online Elo depends on the order; averaged over both orders a win + a loss cancel like two ties.
    elo_split = elo_ratings([("a", "b", "a"), ("a", "b", "b")], k=1, rounds=2000)
    elo_tied = elo_ratings([("a", "b", "tie"), ("a", "b", "tie")], k=1, rounds=10)
    assert elo_tied["a"].mean == 1000.0
    assert elo_split["a"].mean == pytest.approx(1000.0, abs=3e-4)
    # Each order alone moves "a" by -/+ (expected score after the first update - 0.5).
    shift = 1.0 / (1.0 + 10 ** (-1.0 / 400)) - 0.5
    assert elo_split["a"].ci_low == pytest.approx(1000.0 - shift)
    assert elo_split["a"].ci_high == pytest.approx(1000.0 + shift)


def test_bradley_terry_matches_logistic_regression():
    votes = _simulated_votes(n=800, tie_rate=0.2, seed=1)
    index = {model: i for i, model in enumerate(MODELS)}
    rows, labels, weights = [], [], []
    for model_a, model_b, winner in votes:
        row = np.zeros(len(MODELS))
        row[index[model_a]], row[index[model_b]] = 1.0, -1.0
        outcomes = [(1, 0.5), (0, 0.5)] if winner == "tie" else [(1 if winner == "a" else 0, 1.0)]
        for label, weight in outcomes:
            rows.append(row)
            labels.append(label)
            weights.append(weight)
    # C = 1e6 is the same tiny ridge (1e-6) bradley_terry uses; coef_ is ln strength.
    fit = LogisticRegression(fit_intercept=False, C=1e6, tol=1e-12, max_iter=10_000)
    fit.fit(np.array(rows), np.array(labels), sample_weight=np.array(weights))
    expected = 1000.0 + 400.0 / math.log(10) * fit.coef_[0]

    bt = bradley_terry(votes, bootstrap=10)
    np.testing.assert_allclose([bt[m].rating for m in MODELS], expected, atol=1e-4)


def test_overlapping_intervals_share_a_rank():
    votes = [("a", "b", "a")] * 50 + [("a", "b", "b")] * 50
    votes += [("a", "c", "a")] * 90 + [("a", "c", "b")] * 10 + [("b", "c", "a")] * 90 + [("b", "c", "b")] * 10
    bt = bradley_terry(votes, bootstrap=200, seed=3)
    assert bt["a"].rank == bt["b"].rank == 1 and bt["c"].rank == 3


def test_unbeaten_model_stays_finite_and_first():
    votes = [("a", "b", "a")] * 5 + [("b", "c", "a"), ("b", "c", "b"), ("c", "b", "b")]
    bt = bradley_terry(votes, bootstrap=50)
    assert all(math.isfinite(r.rating) and math.isfinite(r.ci_high) for r in bt.values())
    assert bt["a"].rating > bt["b"].rating > bt["c"].rating


def test_votes_from_dicts_gives_the_same_ratings():
    tuples = _simulated_votes(n=200, seed=2)
    rows = [{"model_a": a, "model_b": b, "winner": w, "voter": "x"} for a, b, w in tuples]
    assert elo_ratings(votes_from_dicts(rows), rounds=20) == elo_ratings(tuples, rounds=20)
    with pytest.raises(ValueError, match="row 0 .* lacks winner"):
        votes_from_dicts([{"model_a": "a", "model_b": "b"}])


def test_bad_votes_raise_naming_the_row():
    with pytest.raises(ValueError, match=r"row 1 .*'draw'"):
        elo_ratings([("a", "b", "a"), ("a", "b", "draw")])
    with pytest.raises(ValueError, match=r"row 2 .*itself"):
        bradley_terry([("a", "b", "a"), ("b", "a", "tie"), ("c", "c", "a")])
    with pytest.raises(ValueError, match="row 0"):
        bradley_terry([("a", "b")])
    with pytest.raises(ValueError, match="no votes"):
        elo_ratings([])
