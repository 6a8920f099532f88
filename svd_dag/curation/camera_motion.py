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
    translation = math.hypot(mean_dx, mean_dy)
    radial = abs(divergence) / 2 * rule.flow_width / 2
    if radial >= rule.zoom_min_px and radial >= translation:
        return "zoom"
    if (abs(mean_dx) >= rule.pan_min_px and abs(mean_dx) >= rule.pan_axis_ratio * abs(mean_dy)
            and translation >= rule.pan_coherence * motion_score):
        return "horizontal_pan"
    return OTHER
