"""Summary statistics (the paper's Table 1) and per-metric histograms of the annotations."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

HISTOGRAM_METRICS = {
    "duration_s": "clip length (s)",
    "motion_score": "motion: mean Farneback flow (px @ 320 wide, per 0.5 s)",
    "text_area": "text area (fraction of frame, CRAFT)",
    "aesthetic_score": "LAION aesthetic score",
    "caption_similarity": "CLIP caption-frame similarity",
}


def table1(durations_s: list[float]) -> dict[str, float]:
    """Clips, total hours and mean clip length, as in SVD's Table 1."""
    d = np.asarray(durations_s, dtype=float)
    return {
        "clips": int(d.size),
        "hours": float(d.sum() / 3600.0) if d.size else 0.0,
        "mean_clip_s": float(d.mean()) if d.size else 0.0,
    }


def histograms_png(columns: dict[str, list[Any]], title_suffix: str = "", cutoffs: dict[str, float] | None = None) -> bytes:
    """One PNG with a histogram per metric (NULLs left out and counted in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in HISTOGRAM_METRICS if m in columns]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [v for v in columns[name] if v is not None]
        missing = len(columns[name]) - len(values)
        ax.hist(values, bins=min(30, max(5, len(values) // 2 or 5)), color="#4c72b0")
        if cutoffs and cutoffs.get(name) is not None:
            ax.axvline(cutoffs[name], color="#c44e52", linestyle="--", label="cutoff")
            ax.legend(fontsize=7)
        ax.set_title(HISTOGRAM_METRICS[name] + (f"\n({missing} unscored)" if missing else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    if title_suffix:
        fig.suptitle(title_suffix, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
