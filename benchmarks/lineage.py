"""`svd-dag lineage up` and `down` against catalogs of 10^4 to 10^6 clips: answer time and peak memory.

    .venv/bin/python benchmarks/lineage.py                       # 10^4, 10^5, 10^6 clips
    .venv/bin/python benchmarks/lineage.py --clips 1000000 --repeats 7

The catalog is the synthetic record of tests/lineage_catalog.py (SYNTHETIC rows, not a
pipeline's output), in a real DuckLake on SQLite metadata, with the row counts a corpus of
that size gives: clips x versions `filter_decisions` rows (4 criteria each), members of every
version, a forest of 8 checkpoints each with its `checkpoint_clips`. 10 clips per video.

Each answer is timed in a fresh process as the console script runs it (interpreter start,
imports, attaching the lake, the queries, the JSON): `svd-dag lineage up <checkpoint> --json`
for the deepest checkpoint and `down <sha256> --json` for one video; the median of
`--repeats` runs, and the query part alone (in-process, the lake already attached) beside it.
The target is under 2 s per answer at 10^6 clips. Peak RSS is the child process's (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import lineage_catalog  # noqa: E402
from svd_dag.catalog import Catalog  # noqa: E402
from svd_dag.lake import release_lake  # noqa: E402
from svd_dag.lineage.down import lineage_down  # noqa: E402
from svd_dag.lineage.up import lineage_up  # noqa: E402
from svd_dag.settings import load_settings  # noqa: E402

CLIPS_PER_VIDEO = 10
VERSIONS = 2
CHECKPOINTS = 8


def _cli(home: str, *args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one console-script answer in a fresh process."""
    env = {**os.environ, "SVD_DAG_HOME": home, "MLFLOW_TRACKING_URI": f"sqlite:///{home}/absent.db"}
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child would report
    # this (large) benchmark process's peak as its own.
    code = ("import sys, time; t = time.perf_counter(); from svd_dag.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print('ELAPSED', time.perf_counter() - t, hwm, file=sys.stderr)")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, "lineage", *args, "--json"], env=env, capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    json.loads(out.stdout)
    rss_kb = float(out.stderr.strip().splitlines()[-1].split()[-1])  # VmHWM, kB
    return wall, rss_kb / 1024


def measure(clips: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="lineage-bench-") as home:
        cat = Catalog.from_settings(load_settings({"SVD_DAG_HOME": home}))  # the home the console script opens
        started = time.perf_counter()
        built = lineage_catalog.build(cat, videos=clips // CLIPS_PER_VIDEO, clips_per_video=CLIPS_PER_VIDEO,
                                      versions=VERSIONS, checkpoints=CHECKPOINTS, seed=1)
        cat.compact()
        build_s = time.perf_counter() - started
        deepest = max(built["checkpoints"], key=lambda r: _depth(built["checkpoints"], r))
        ref = f"{deepest['asset']}@{deepest['data_version']}"
        sha = cat.scalar("SELECT video_sha256 FROM checkpoint_clips WHERE data_version = ? AND status = 'used' LIMIT 1",
                         [deepest["data_version"]])
        rows = {t: cat.scalar(f"SELECT count(*) FROM {t}") for t in
                ("clip_history", "filter_decisions", "dataset_members", "checkpoint_clips")}
        # Detach first: while a process holds the SQLite metadata open, its write-ahead log is not
        # folded back and every reader pays for it (~0.8 GB more RSS at 10^6 clips), which a
        # catalog at rest does not.
        release_lake(cat.config)
        up_cli = [_cli(home, "up", ref) for _ in range(repeats)]
        down_cli = [_cli(home, "down", sha) for _ in range(repeats)]
        lineage_up(cat, ref)  # attach + warm
        up_q = _median(lambda: lineage_up(cat, ref), repeats)
        down_q = _median(lambda: lineage_down(cat, sha), repeats)
        release_lake(cat.config)
        return {"clips": clips, "build_s": build_s, "rows": rows, "chain": _depth(built["checkpoints"], deepest) + 1,
                "up_query_s": up_q, "down_query_s": down_q,
                "up_cli_s": statistics.median(w for w, _ in up_cli), "down_cli_s": statistics.median(w for w, _ in down_cli),
                "up_rss_mb": max(m for _, m in up_cli), "down_rss_mb": max(m for _, m in down_cli)}


def _depth(rows: list[dict], row: dict) -> int:
    by = {(r["asset"], r["data_version"]): r for r in rows}
    depth = 0
    while row["parent_asset"]:
        row, depth = by[(row["parent_asset"], row["parent_data_version"])], depth + 1
    return depth


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = [measure(int(n), args.repeats) for n in args.clips.split(",")]
    base = results[0]
    print(f"\n{'clips':>9} {'decisions':>10} {'members':>9} {'ckpt clips':>10} {'chain':>5} | {'up s':>6} {'(query)':>7} "
          f"{'down s':>6} {'(query)':>7} | {'up x':>5} {'down x':>6} | {'peak MB':>7} | build s")
    for r in results:
        print(f"{r['clips']:>9} {r['rows']['filter_decisions']:>10} {r['rows']['dataset_members']:>9} "
              f"{r['rows']['checkpoint_clips']:>10} {r['chain']:>5} | {r['up_cli_s']:>6.2f} {r['up_query_s']:>7.3f} "
              f"{r['down_cli_s']:>6.2f} {r['down_query_s']:>7.3f} | {r['up_cli_s'] / base['up_cli_s']:>5.2f} "
              f"{r['down_cli_s'] / base['down_cli_s']:>6.2f} | {max(r['up_rss_mb'], r['down_rss_mb']):>7.0f} | "
              f"{r['build_s']:.1f}")
    print(f"(x: answer time against the {base['clips']}-clip catalog of the same run; "
          f"max RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
