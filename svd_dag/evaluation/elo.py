"""Model ratings from pairwise human votes: online Elo (SVD's procedure) and Bradley-Terry MLE.

A vote is a tuple (model_a, model_b, winner) with winner "a", "b" or "tie"; a tie scores
0.5 for each side in both methods. `votes_from_dicts` turns rows such as
{"model_a": ..., "model_b": ..., "winner": ...} into that form.

- `elo_ratings`: sequential Elo updates with factor K, repeated over `rounds` random orders
  of the votes (the order matters for online Elo); the rating is the mean over rounds and
  the 95% interval spans the 2.5 / 97.5 percentiles of the rounds' final ratings. This is
  the protocol of the Stable Video Diffusion human evaluation (K = 1, 1000 orderings).
- `bradley_terry`: maximum-likelihood strengths, P(i beats j) = p_i / (p_i + p_j), fitted
  by Newton's method on theta = ln p with a tiny ridge (1e-6, the same objective as an
  L2 logistic regression with C = 1e6) so that an unbeaten model stays finite. The ridge
  also centres theta (the likelihood gradient sums to zero), i.e. anchors the geometric
  mean of the strengths. Reported on the Elo scale, initial + scale * log_base(p_i), with
  95% intervals from bootstrap resamples of the votes and Chatbot-Arena ranks:
  rank = 1 + number of models whose ci_low is above this model's ci_high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

Vote = tuple[Hashable, Hashable, str]
WINNER_SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5}  # score of model_a


@dataclass(frozen=True)
class EloResult:
    mean: float
    ci_low: float
    ci_high: float
    n_votes: int


@dataclass(frozen=True)
class BtResult:
    rating: float
    ci_low: float
    ci_high: float
    rank: int


def votes_from_dicts(rows: Iterable[Mapping[str, object]]) -> list[Vote]:
    """Rows with keys model_a, model_b, winner -> vote tuples (validated by the rating functions)."""
    votes: list[Vote] = []
    for index, row in enumerate(rows):
        missing = [key for key in ("model_a", "model_b", "winner") if key not in row]
        if missing:
            raise ValueError(f"vote row {index} {dict(row)!r} lacks {', '.join(missing)}")
        votes.append((row["model_a"], row["model_b"], row["winner"]))  # type: ignore[arg-type]
    return votes


@dataclass(frozen=True)
class _EncodedVotes:
    models: list[Hashable]
    a: np.ndarray  # model index of side a, per vote
    b: np.ndarray
    score_a: np.ndarray  # 1, 0 or 0.5


def _encode(votes: Sequence[Vote]) -> _EncodedVotes:
    """Validate votes and map models to indices (in order of first appearance)."""
    index: dict[Hashable, int] = {}
    a, b, score = [], [], []
    for row_number, vote in enumerate(votes):
        if not isinstance(vote, (tuple, list)) or len(vote) != 3:
            raise ValueError(f"vote row {row_number} {vote!r}: expected (model_a, model_b, winner)")
        model_a, model_b, winner = vote
        if winner not in WINNER_SCORES:
            raise ValueError(f"vote row {row_number} {tuple(vote)!r}: winner must be 'a', 'b' or 'tie', got {winner!r}")
        if model_a == model_b:
            raise ValueError(f"vote row {row_number} {tuple(vote)!r}: a model cannot be compared with itself")
        a.append(index.setdefault(model_a, len(index)))
        b.append(index.setdefault(model_b, len(index)))
        score.append(WINNER_SCORES[winner])
    if not index:
        raise ValueError("votes: no votes given")
    return _EncodedVotes(list(index), np.array(a), np.array(b), np.array(score, dtype=np.float64))


def elo_ratings(
    votes: Sequence[Vote],
    k: float = 1.0,
    initial: float = 1000.0,
    scale: float = 400.0,
    base: float = 10.0,
    rounds: int = 1000,
    seed: int = 0,
) -> dict[Hashable, EloResult]:
    """Online Elo averaged over `rounds` shuffled vote orders; 95% percentile interval."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    encoded = _encode(votes)
    n_models, n_votes = len(encoded.models), len(encoded.a)
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((rounds, n_votes)), axis=1)  # one permutation per round

    # All rounds advance together: step i applies each round's i-th vote of its own order.
    ratings = np.full((rounds, n_models), float(initial))
    round_index = np.arange(rounds)
    for step in range(n_votes):
        vote = orders[:, step]
        a, b, score_a = encoded.a[vote], encoded.b[vote], encoded.score_a[vote]
        rating_a, rating_b = ratings[round_index, a], ratings[round_index, b]
        expected_a = 1.0 / (1.0 + base ** ((rating_b - rating_a) / scale))
        delta = k * (score_a - expected_a)
        ratings[round_index, a] = rating_a + delta
        ratings[round_index, b] = rating_b - delta

    counts = np.bincount(encoded.a, minlength=n_models) + np.bincount(encoded.b, minlength=n_models)
    low, high = np.percentile(ratings, [2.5, 97.5], axis=0)
    mean = ratings.mean(axis=0)
    return {
        model: EloResult(float(mean[i]), float(low[i]), float(high[i]), int(counts[i]))
        for i, model in enumerate(encoded.models)
    }


def _pair_tables(encoded: _EncodedVotes) -> tuple[np.ndarray, np.ndarray]:
    """Per vote: id of its unordered pair (i < j) as i * n_models + j, and the win credit of i."""
    low, high = np.minimum(encoded.a, encoded.b), np.maximum(encoded.a, encoded.b)
    credit_low = np.where(encoded.a == low, encoded.score_a, 1.0 - encoded.score_a)
    return low * len(encoded.models) + high, credit_low


def _fit_log_strengths(
    n_models: int, i: np.ndarray, j: np.ndarray, games: np.ndarray, wins_i: np.ndarray, ridge: float
) -> np.ndarray:
    """Ridge-penalised BT MLE of theta (natural log strengths) from per-pair totals, by Newton.

    Minimises -sum[w_ij ln s(t_i - t_j) + (n_ij - w_ij) ln s(t_j - t_i)] + ridge/2 ||t||^2,
    a strictly convex objective, so Newton with step halving converges to its unique minimum.
    """
    theta = np.zeros(n_models)

    def objective(t: np.ndarray) -> float:
        margin = t[i] - t[j]
        return float(
            np.sum(wins_i * np.logaddexp(0.0, -margin) + (games - wins_i) * np.logaddexp(0.0, margin))
            + 0.5 * ridge * t @ t
        )

    value = objective(theta)
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(-(theta[i] - theta[j])))
        residual = games * p - wins_i  # d loss / d margin
        gradient = ridge * theta + np.bincount(i, residual, n_models) - np.bincount(j, residual, n_models)
        curvature = games * p * (1.0 - p)
        hessian = ridge * np.eye(n_models)
        np.add.at(hessian, (i, i), curvature)
        np.add.at(hessian, (j, j), curvature)
        np.add.at(hessian, (i, j), -curvature)
        np.add.at(hessian, (j, i), -curvature)
        step = np.linalg.solve(hessian, gradient)
        if np.max(np.abs(step)) < 1e-9:  # nats; 1e-9 nat is ~2e-7 Elo points
            break
        size = 1.0
        while size > 1e-10:
            candidate = theta - size * step
            candidate_value = objective(candidate)
            if candidate_value <= value:
                theta, value = candidate, candidate_value
                break
            size *= 0.5
        else:  # no descent along the Newton direction: at the minimum up to rounding
            break
    return theta


def bradley_terry(
    votes: Sequence[Vote],
    bootstrap: int = 1000,
    seed: int = 0,
    scale: float = 400.0,
    base: float = 10.0,
    initial: float = 1000.0,
    ridge: float = 1e-6,
) -> dict[Hashable, BtResult]:
    """Bradley-Terry MLE on the Elo scale, bootstrap 95% intervals and Arena-style ranks."""
    if bootstrap < 1:
        raise ValueError(f"bootstrap must be >= 1, got {bootstrap}")
    if ridge <= 0:
        raise ValueError(f"ridge must be > 0 (it keeps unbeaten models finite), got {ridge}")
    encoded = _encode(votes)
    n_models, n_votes = len(encoded.models), len(encoded.a)
    pair_id, credit_low = _pair_tables(encoded)
    n_pairs = n_models * n_models
    pair_i, pair_j = np.divmod(np.arange(n_pairs), n_models)
    to_elo = scale / math.log(base)

    def fit(weights: np.ndarray) -> np.ndarray:
        games = np.bincount(pair_id, weights, n_pairs)
        wins = np.bincount(pair_id, weights * credit_low, n_pairs)
        used = games > 0
        theta = _fit_log_strengths(n_models, pair_i[used], pair_j[used], games[used], wins[used], ridge)
        return initial + to_elo * theta

    ratings = fit(np.ones(n_votes))
    rng = np.random.default_rng(seed)
    # A resample is a vote multiset: weight each vote by how often it was drawn. A model that
    # draws no votes in a resample sits at `initial` there (the ridge's minimum).
    draws = (np.bincount(rng.integers(0, n_votes, n_votes), minlength=n_votes) for _ in range(bootstrap))
    resampled = np.stack([fit(counts.astype(np.float64)) for counts in draws])
    ci_low, ci_high = np.percentile(resampled, [2.5, 97.5], axis=0)
    ranks = 1 + (ci_low[None, :] > ci_high[:, None]).sum(axis=1)
    return {
        model: BtResult(float(ratings[m]), float(ci_low[m]), float(ci_high[m]), int(ranks[m]))
        for m, model in enumerate(encoded.models)
    }
