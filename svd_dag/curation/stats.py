"""Summary statistics (the paper's Table 1) and per-metric histograms of the annotations.

Both are computed in DuckDB (counts per bin, sums), so a table of any size yields a few
hundred numbers for Python to plot.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import duckdb

HISTOGRAM_METRICS = {
    "duration_s": "clip length (s)",
    "motion_score": "motion: mean Farneback flow (px @ 320 wide, per 0.5 s)",
    "text_area": "text area (fraction of frame, CRAFT)",
    "aesthetic_score": "LAION aesthetic score",
    "caption_similarity": "CLIP caption-frame similarity",
}


@dataclass
class Histogram:
    edges: list[float]  # bins + 1 edges; empty when the column has no value
    counts: list[int]
    missing: int  # NULLs: unscored clips


def table1(con: duckdb.DuckDBPyConnection, source: str = "annotations") -> dict[str, float]:
    """Clips, total hours and mean clip length, as in SVD's Table 1."""
    n, total_s, mean_s = con.execute(f'SELECT count(*), coalesce(sum(duration_s), 0), coalesce(avg(duration_s), 0) '
                                     f'FROM "{source}"').fetchone()
    return {"clips": int(n), "hours": float(total_s) / 3600.0, "mean_clip_s": float(mean_s)}


def histograms(con: duckdb.DuckDBPyConnection, source: str, metrics: list[str], bins: int = 30) -> dict[str, Histogram]:
    """Equal-width histograms of each metric column of `source`, counted in SQL."""
    out = {}
    for m in metrics:
        n, lo, hi, missing = con.execute(f'SELECT count({m}), min({m}), max({m}), count(*) - count({m}) '
                                         f'FROM "{source}"').fetchone()
        if not n:
            out[m] = Histogram([], [], int(missing))
            continue
        lo, hi = float(lo), float(hi)
        k = bins if hi > lo else 1
        width = (hi - lo) / k if hi > lo else 1.0
        counts = dict(con.execute(
            f'SELECT least(floor(({m} - ?) / ?)::BIGINT, ?) AS b, count(*) FROM "{source}" WHERE {m} IS NOT NULL '
            "GROUP BY b", [lo, width, k - 1]).fetchall())
        out[m] = Histogram([lo + i * width for i in range(k + 1)], [int(counts.get(i, 0)) for i in range(k)],
                           int(missing))
    return out


def histograms_png(hists: dict[str, Histogram], title_suffix: str = "", cutoffs: dict[str, float] | None = None) -> bytes:
    """One PNG with a histogram per metric (NULLs left out and counted in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in HISTOGRAM_METRICS if m in hists]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        h = hists[name]
        if h.counts:
            ax.stairs(h.counts, h.edges, fill=True, color="#4c72b0")
        if cutoffs and cutoffs.get(name) is not None:
            ax.axvline(cutoffs[name], color="#c44e52", linestyle="--", label="cutoff")
            ax.legend(fontsize=7)
        ax.set_title(HISTOGRAM_METRICS[name] + (f"\n({h.missing} unscored)" if h.missing else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    if title_suffix:
        fig.suptitle(title_suffix, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
