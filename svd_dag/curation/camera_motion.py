"""Camera-motion labels (static / horizontal_pan / zoom / other) from the flow curation computed.

Inputs are a clip's motion descriptors from `svd_dag.curation.motion` (no model re-runs):
mean flow magnitude `motion_score`, mean displacement (`mean_dx`, `mean_dy`) and mean
divergence, displacements in px of a `MOTION_UNIT_WIDTH` (320) px wide frame per 0.5 s. The rule, in order:

1. static  : motion_score < static_max_px                      (almost nothing moves)
2. zoom    : radial displacement at the frame's half-width, |divergence| / 2 * W/2,
             >= zoom_min_px and >= the mean translation |(dx, dy)|
             (uniform scaling by s has divergence 2 (s - 1); in or out are both "zoom")
3. horizontal_pan : |dx| >= pan_min_px, |dx| >= pan_axis_ratio * |dy|, and the mean flow
             vector carries at least `pan_coherence` of the mean magnitude (the whole
             frame moves together: a camera pan, not one object crossing)
4. other   : anything else (object motion, tilts, shakes) and clips with no flow.

Thresholds are a `CameraRule` so they are configuration; the rule and its values are stored
with every label so an adapter's training set can be reproduced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from svd_dag.curation.motion import MOTION_UNIT_WIDTH

LABELS = ("static", "horizontal_pan", "zoom")  # the three camera adapters; "other" gets none
OTHER = "other"


@dataclass(frozen=True)
class CameraRule:
    static_max_px: float = 0.3
    zoom_min_px: float = 1.0
    pan_min_px: float = 1.0
    pan_axis_ratio: float = 2.0
    pan_coherence: float = 0.5
    flow_width: int = MOTION_UNIT_WIDTH  # the frame width the px thresholds refer to

    def validate(self) -> "CameraRule":
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"camera rule {name} must be a positive number, got {value!r}")
        return self

    def describe(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in asdict(self).items())


def camera_label(motion_score: float | None, mean_dx: float | None, mean_dy: float | None,
                 divergence: float | None, rule: CameraRule = CameraRule()) -> str:
    values = (motion_score, mean_dx, mean_dy, divergence)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return OTHER
    if motion_score < rule.static_max_px:
        return "static"
    translation = math.sqrt(mean_dx * mean_dx + mean_dy * mean_dy)  # as label_sql computes it
    radial = abs(divergence) / 2 * rule.flow_width / 2
    if radial >= rule.zoom_min_px and radial >= translation:
        return "zoom"
    if (abs(mean_dx) >= rule.pan_min_px and abs(mean_dx) >= rule.pan_axis_ratio * abs(mean_dy)
            and translation >= rule.pan_coherence * motion_score):
        return "horizontal_pan"
    return OTHER


def label_sql(rule: CameraRule = CameraRule()) -> str:
    """`camera_label` as one DuckDB CASE expression over the columns `motion_score`, `mean_dx`,
    `mean_dy` and `divergence`, so the catalog labels every clip without rows reaching Python.
    The rule's numbers are validated floats, written as literals (`float.__repr__` round-trips)."""
    r = {k: repr(float(v)) for k, v in asdict(rule.validate()).items()}
    columns = ("motion_score", "mean_dx", "mean_dy", "divergence")
    missing = " OR ".join(f"{c} IS NULL OR isnan({c})" for c in columns)
    translation = "sqrt(mean_dx * mean_dx + mean_dy * mean_dy)"
    radial = f"(abs(divergence) / 2 * {r['flow_width']} / 2)"
    return (f"CASE WHEN {missing} THEN '{OTHER}' "
            f"WHEN motion_score < {r['static_max_px']} THEN 'static' "
            f"WHEN {radial} >= {r['zoom_min_px']} AND {radial} >= {translation} THEN 'zoom' "
            f"WHEN abs(mean_dx) >= {r['pan_min_px']} AND abs(mean_dx) >= {r['pan_axis_ratio']} * abs(mean_dy) "
            f"AND {translation} >= {r['pan_coherence']} * motion_score THEN 'horizontal_pan' "
            f"ELSE '{OTHER}' END")


def label_clips(con, rule: CameraRule = CameraRule()) -> tuple[dict[str, int], str, int]:
    """(Re)build the catalog table `camera_motion_labels` from `annotations` on connection
    `con`: each clip's descriptors, its label and the rule, in one SQL statement, so no clip row
    reaches Python however large the corpus. Returns (clips per label, content digest of the
    (clip_id, label) pairs, clips)."""
    from svd_dag.curation.datasets import relation_digest

    con.execute(f"""CREATE OR REPLACE TABLE camera_motion_labels AS
        SELECT clip_id, motion_score, mean_dx, mean_dy, divergence, {label_sql(rule)} AS label, ?::VARCHAR AS rule
        FROM annotations""", [rule.describe()])
    found = dict(con.execute("SELECT label, count(*) FROM camera_motion_labels GROUP BY label").fetchall())
    digest, n = relation_digest(con, "SELECT clip_id, label FROM camera_motion_labels")
    return {name: int(found.get(name, 0)) for name in (*LABELS, OTHER)}, digest, n
