"""The curation study (SPEC 2.6): which threshold per filter criterion makes the better model.

The grid is criterion x level (the fraction of clips removed by that criterion alone). Each
cell trains the same small model on its subset and renders the same probe prompts with the
same seeds; cells of one criterion are then ranked by Elo from pairwise votes on those
samples, and the best level is the recommended threshold.

Votes come from people (the `preference_votes` asset) or, when none exist for a pool, from an
automatic judge. The judge here is a *proxy*: for each probe it prefers the sample whose
frames are closer (mean absolute pixel difference, after resizing) to the real clip the probe
prompt was taken from: fidelity to the data, not human preference. Its votes carry
`rater_id = JUDGE_ID` and are never pooled with human votes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

CRITERIA = ("motion", "aesthetics", "caption_similarity", "text")
LEVELS = {"12.5": 0.125, "25": 0.25, "50": 0.5}  # partition key -> fraction removed
JUDGE_ID = "judge:reference-l1-v1"
AXIS = "visual_quality"


def cell_name(criterion: str, level: str) -> str:
    return f"{criterion}|{level}"


def cell_fractions(criterion: str, level: str) -> dict[str, float]:
    """Remove fractions for one cell: only its criterion filters."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
    return {c: (LEVELS[level] if c == criterion else 0.0) for c in CRITERIA}


def reference_distance(video: np.ndarray, reference: np.ndarray) -> float:
    """Mean |video - reference| in [0, 1] units over the frames both have, video resized to the reference."""
    import cv2  # lazily: the Dagster code server imports this module's constants on every reload

    n = min(len(video), len(reference))
    if n == 0:
        raise ValueError("empty video or reference")
    h, w = reference.shape[1:3]
    resized = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in video[:n]])
    return float(np.abs(resized.astype(np.float32) - reference[:n].astype(np.float32)).mean() / 255.0)


def judge_pair(video_a: np.ndarray, video_b: np.ndarray, reference: np.ndarray, tie_margin: float = 0.002) -> str:
    da, db = reference_distance(video_a, reference), reference_distance(video_b, reference)
    if abs(da - db) <= tie_margin:
        return "tie"
    return "a" if da < db else "b"


def judge_votes(samples: dict[str, dict[str, np.ndarray]], references: dict[str, np.ndarray], pool: str,
                tie_margin: float = 0.002) -> list[dict]:
    """Votes for every pair of models on every probe they both rendered.

    `samples[model][probe_id]` is a video (uint8 [F, H, W, 3]); `references[probe_id]` the real clip.
    """
    votes = []
    for a, b in itertools.combinations(sorted(samples), 2):
        for probe in sorted(set(samples[a]) & set(samples[b]) & set(references)):
            votes.append({"prompt_id": probe, "model_a": a, "model_b": b, "axis": AXIS, "rater_id": JUDGE_ID,
                          "pool": pool, "winner": judge_pair(samples[a][probe], samples[b][probe], references[probe],
                                                             tie_margin)})
    return votes


@dataclass(frozen=True)
class Recommendation:
    criterion: str
    level: str
    remove_fraction: float
    elo: float
    elo_low: float
    elo_high: float
    rater_kind: str  # "human" or "judge" (a proxy)
    cells_compared: int
    separated: bool  # the winner's interval lies above every other cell's


def recommend(criterion: str, ratings: dict[str, tuple[float, float, float]], rater_kind: str) -> Recommendation:
    """The level with the highest mean Elo; `ratings[level] = (elo, low, high)` (at least two levels)."""
    if len(ratings) < 2:
        raise ValueError(f"{criterion}: a recommendation needs at least two rated levels, got {sorted(ratings)}")
    best = max(ratings, key=lambda lv: ratings[lv][0])
    elo, low, high = ratings[best]
    separated = all(low > ratings[lv][2] for lv in ratings if lv != best)
    return Recommendation(criterion, best, LEVELS[best], elo, low, high, rater_kind, len(ratings), separated)
