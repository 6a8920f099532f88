"""`camera_motion_labels` at corpus scale: the rule in SQL (now) against the rule per clip in
Python (before), on the same catalog, same run.

    .venv/bin/python benchmarks/camera_labels.py --clips 10000,100000,1000000
    .venv/bin/python benchmarks/camera_labels.py --clips 10000000 --python-max 1000000

For each N a catalog of N SYNTHETIC clips is built with `scale.build_catalog` (seeded random
flow descriptors, labelled synthetic) and joined by the `annotations` asset. Then, each in a
child process of its own (so that its peak RSS is its own, summed over the process and its
children every 50 ms):

- python: what the asset did before: every `annotations` row to a Python dict,
  `camera_label` per clip, `pa.Table.from_pylist`, `replace_table`, a JSON digest;
- sql: `label_clips` in one catalog transaction (what the asset now runs);
- dagster: the `camera_motion_labels` asset materialized in process, as the UI would.

Every run ends with the same (clip_id, label) digest, checked here, so the two agree clip for
clip. Python is skipped above `--python-max` clips (memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def _settings(home: str):
    from svd_dag.settings import load_settings

    return load_settings({"SVD_DAG_HOME": home})


def build(home: str, n: int) -> dict:
    from scale import build_catalog, timed_materialize

    from svd_dag.catalog import Catalog
    from svd_dag.definitions import build_defs

    settings = _settings(home)
    t = time.perf_counter()
    build_catalog(Catalog.from_settings(settings), n)
    build_s = time.perf_counter() - t
    return {"build_s": build_s, "annotations_s": timed_materialize(build_defs(settings), ["annotations"])}


def label_in_python(cat) -> None:
    """The asset's body before the rule moved into SQL (kept here as the baseline)."""
    import hashlib

    import pyarrow as pa

    from svd_dag.curation.camera_motion import CameraRule, camera_label

    rule = CameraRule().validate()
    clips = cat.rows("SELECT clip_id, motion_score, mean_dx, mean_dy, divergence FROM annotations")
    rows = [{**c, "label": camera_label(c["motion_score"], c["mean_dx"], c["mean_dy"], c["divergence"], rule),
             "rule": rule.describe()} for c in clips]
    cat.replace_table("camera_motion_labels", pa.Table.from_pylist(rows))
    hashlib.sha256(json.dumps(sorted((r["clip_id"], r["label"]) for r in rows)).encode()).hexdigest()


def run_child(home: str, how: str) -> dict:
    from scale import PeakRss, timed_materialize

    from svd_dag.catalog import Catalog
    from svd_dag.curation.camera_motion import CameraRule, label_clips
    from svd_dag.curation.datasets import relation_digest

    settings = _settings(home)
    cat = Catalog.from_settings(settings)
    with PeakRss() as rss:
        t = time.perf_counter()
        if how == "python":
            label_in_python(cat)
        elif how == "sql":
            cat.write(lambda con: label_clips(con, CameraRule()))
        else:
            from svd_dag.definitions import build_defs

            timed_materialize(build_defs(settings), ["camera_motion_labels"])
        seconds = time.perf_counter() - t
    digest = cat.write(lambda con: relation_digest(con, "SELECT clip_id, label FROM camera_motion_labels"))[0]
    return {"how": how, "seconds": seconds, "peak_rss_mb": rss.mb, "digest": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="10000,100000,1000000")
    ap.add_argument("--python-max", type=int, default=1_000_000)
    ap.add_argument("--child", nargs=2, metavar=("HOME", "HOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(*args.child)))
        return
    rows = []
    for n in [int(float(x)) for x in args.clips.split(",")]:
        with tempfile.TemporaryDirectory(prefix="camera-labels-") as home:
            built = build(home, n)
            runs = {}
            for how in (["python"] if n <= args.python_max else []) + ["sql", "dagster"]:
                done = subprocess.run([sys.executable, __file__, "--child", home, how], capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"clips={n} {how}: failed\n{done.stderr[-3000:]}")
                runs[how] = json.loads(done.stdout.strip().splitlines()[-1])
            if len({r["digest"] for r in runs.values()}) != 1:
                sys.exit(f"clips={n}: the label digests differ: {runs}")
            rows.append({"clips": n, **built, "runs": runs})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| clips | python s | sql s | speed-up | dagster s | python peak RSS MB | sql peak RSS MB | "
          "sql us/clip | same labels |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for r in rows:
        py, sql, dag = r["runs"].get("python"), r["runs"]["sql"], r["runs"]["dagster"]
        print(f"| {r['clips']:,} | {py['seconds']:.2f} | {sql['seconds']:.2f} | {py['seconds'] / sql['seconds']:.1f}x | "
              if py else f"| {r['clips']:,} | - | {sql['seconds']:.2f} | - | ", end="")
        print(f"{dag['seconds']:.2f} | {py['peak_rss_mb']:.0f} | " if py else f"{dag['seconds']:.2f} | - | ", end="")
        print(f"{sql['peak_rss_mb']:.0f} | {sql['seconds'] / r['clips'] * 1e6:.2f} | yes |")


if __name__ == "__main__":
    main()
