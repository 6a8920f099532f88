"""Data path at corpus scale: time and peak memory of the SQL-side assets against N clips.

    .venv/bin/python benchmarks/scale.py --clips 1000000
    .venv/bin/python benchmarks/scale.py --clips 10000,100000,1000000,10000000   # one child process per N

A catalog of N synthetic clips is built through the project's own writers (`Catalog.append`,
`record_version`, `write_embedding_file`): SYNTHETIC scores, captions and embeddings, drawn
from a seeded RNG, labelled `weights=synthetic`; nothing here is a model's output. Then it
times, through Dagster (`execute_in_process` of the asset, as the UI would run it), and the
filter itself also in-process without Dagster:

- `annotations` (the join, Table 1, histograms, content digest),
- `lvd_f` + `lvd_f_eval` (percentile cutoffs, per-clip decisions, eval split, manifests),
- `hq_finetune_set`,
- `aesthetic_scores` and `caption_similarity` from stored float16 embeddings, on a separate
  catalog of `--embedding-clips` clips (default min(N, 2000): caption similarity runs a CLIP
  text tower per caption, random init, seconds per thousand captions on one CPU).

Peak RSS is sampled over the whole process tree (this process and its children, summed)
every 50 ms, for the data path (build + annotations + lvd_f + hq_finetune_set) and for the
model phase (aesthetics, caption similarity: a CLIP text tower in memory, the same at every
N) apart; the data-path catalog is closed before the model phase, as a separate Dagster
step process would not hold it. The last line, for one N, is `scale: clips=N lvd_f_s=<s> peak_rss_mb=<MB>` with the
peak of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

BUILD_BATCH = 250_000


class PeakRss:
    """Max over time of the summed RSS of this process and all its descendants."""

    def __init__(self, every_s: float = 0.05):
        import psutil

        self.proc, self.every_s, self.peak, self._stop = psutil.Process(), every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def build_catalog(cat, n: int, seed: int = 0) -> None:
    """N synthetic clips with every annotation table the filters read (labelled synthetic)."""
    import numpy as np
    import pyarrow as pa

    from svd_dag.curation.annotation_batches import record_version
    from svd_dag.curation.datasets import now

    rng = np.random.default_rng(seed)
    stamp = now()
    for lo in range(0, n, BUILD_BATCH):
        k = min(BUILD_BATCH, n - lo)
        idx = np.arange(lo, lo + k)
        ids = pa.array([f"synthetic-{i:09d}" for i in idx])
        video = pa.array([f"video-{i // 20:07d}" for i in idx])
        start = (idx % 20) * 60
        dur = rng.uniform(1.0, 12.0, k)
        base = {"clip_id": ids, "annotator": pa.array(["synthetic"] * k), "weights": pa.array(["synthetic"] * k),
                "annotated_at": pa.array([stamp] * k)}
        tables = {
            "clips": {"clip_id": ids, "video_sha256": video,
                      "video_uri": pa.array([f"s3://synthetic/{v}.mp4" for v in video.to_pylist()]),
                      "start_frame": pa.array(start), "end_frame": pa.array(start + (dur * 30).astype(int)),
                      "start_s": pa.array(start / 30.0), "end_s": pa.array(start / 30.0 + dur),
                      "duration_s": pa.array(dur), "fps": pa.array(np.full(k, 30.0)),
                      "width": pa.array(np.full(k, 1280, np.int32)), "height": pa.array(np.full(k, 720, np.int32)),
                      "boundary_passes": pa.array([["native"]] * k), "samples": pa.array(["synthetic"] * k),
                      "scan_key": pa.array(["synthetic"] * k)},
            "motion_scores": {**base, "motion_score": pa.array(rng.gamma(2.0, 1.0, k)),
                              "mean_dx": pa.array(rng.normal(0, 1, k)), "mean_dy": pa.array(rng.normal(0, 1, k)),
                              "divergence": pa.array(rng.normal(0, 0.01, k))},
            "ocr_scores": {**base, "text_area": pa.array(rng.beta(0.5, 8.0, k))},
            "aesthetic_scores": {**base, "aesthetic_score": pa.array(rng.normal(5.0, 1.0, k))},
            "caption_similarity": {**base, "caption_similarity": pa.array(rng.normal(0.25, 0.05, k))},
            "captions": {**base, "caption": pa.array([f"synthetic caption {i % 997}" for i in idx])},
        }
        for name, cols in tables.items():
            if name != "clips":
                cols["model_version"] = pa.array([f"{name}-synthetic"] * k)
            cat.append(name, pa.table(cols))
    for name, annotator in [("motion_scores", "farneback"), ("ocr_scores", "craft"), ("aesthetic_scores", "laion_aesthetic"),
                            ("caption_similarity", "clip_text_image"), ("captions", "captioners")]:
        record_version(cat, annotator, f"{name}-synthetic", "synthetic", name)


def build_embeddings(cat, store, n: int, dim: int = 512, frames: int = 3, batch: int = 256, seed: int = 1) -> None:
    """Float16 embedding files + `clip_embeddings` rows for the first n clips (synthetic vectors)."""
    import numpy as np
    import pyarrow as pa

    from svd_dag.curation.annotation_batches import record_version
    from svd_dag.curation.datasets import now
    from svd_dag.curation.embedding_files import write_embedding_file

    rng = np.random.default_rng(seed)
    ids = [r["clip_id"] for r in cat.rows("SELECT clip_id FROM clips ORDER BY clip_id LIMIT ?", [n])]
    version = "open_clip-synthetic@samples=synthetic"
    for lo in range(0, len(ids), batch):
        chunk = ids[lo:lo + batch]
        vecs = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.normal(size=(len(chunk), frames, dim))]
        uri = write_embedding_file(store, "clip_embeddings/synthetic", chunk, vecs)
        cat.append("clip_embeddings", pa.table({
            "clip_id": chunk, "arch": ["ViT-B-32"] * len(chunk), "embed_dim": [dim] * len(chunk),
            "frames": [frames] * len(chunk), "embeddings_uri": [uri] * len(chunk), "annotator": ["open_clip"] * len(chunk),
            "model_version": [version] * len(chunk), "weights": ["synthetic"] * len(chunk), "annotated_at": [now()] * len(chunk)}))
    record_version(cat, "open_clip", version, "synthetic", "clip_embeddings")


def start_s3() -> object:
    """moto's S3 server on a free loopback port; the AWS variables point at it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      SVD_DAG_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    return server


def _folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20


def timed_materialize(defs, assets: list[str], config: dict | None = None) -> float:
    import dagster as dg

    job = defs.resolve_implicit_global_asset_job_def()
    t = time.perf_counter()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                    asset_selection=[dg.AssetKey(a) for a in assets],
                                    run_config={"ops": {k: {"config": v} for k, v in (config or {}).items()}})
    assert result.success, assets
    return time.perf_counter() - t


def lvd_f_in_process(cat, store) -> float:
    """The same SQL as the lvd_f asset, called directly (no Dagster run around it)."""
    from svd_dag.curation.datasets import MANIFEST_COLUMNS, DatasetPart, annotator_snapshot, publish_dataset, record_decisions
    from svd_dag.curation.filtering import PAPER_REMOVE_FRACTIONS, eval_cut, eval_held_sql, percentile_filter

    def publish(con):
        result = percentile_filter(con, PAPER_REMOVE_FRACTIONS)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE split AS SELECT {MANIFEST_COLUMNS}, {eval_held_sql('clip_id')} AS held
                        FROM annotations JOIN filter_outcome USING (clip_id) WHERE kept""", ["bench", eval_cut(0.1)])
        published = publish_dataset(
            con, store, [DatasetPart("bench_train", f"SELECT {MANIFEST_COLUMNS} FROM split WHERE NOT held ORDER BY clip_id"),
                         DatasetPart("bench_eval", f"SELECT {MANIFEST_COLUMNS} FROM split WHERE held ORDER BY clip_id",
                                     file="eval_manifest.parquet", suffix="-eval")],
            version_inputs={"bench": True, "annotators": annotator_snapshot(con)}, report={}, folder="bench",
            total=result.total, make_current=False)
        record_decisions(con, published.version)

    t = time.perf_counter()
    cat.write(publish)
    return time.perf_counter() - t


def run_one(n: int, embedding_clips: int) -> dict:
    from svd_dag.catalog import Catalog
    from svd_dag.definitions import build_defs
    from svd_dag.settings import load_settings
    from svd_dag.storage import Store

    out: dict = {"clips": n}
    with tempfile.TemporaryDirectory(prefix="scale-") as home, PeakRss() as rss:
        settings = load_settings({"SVD_DAG_HOME": os.path.join(home, "a")})
        cat, store = Catalog.from_settings(settings), Store(settings.storage_uri)
        t = time.perf_counter()
        build_catalog(cat, n)
        out["build_s"] = time.perf_counter() - t
        out["build_rss_mb"] = rss.mb
        defs = build_defs(settings)
        out["annotations_s"] = timed_materialize(defs, ["annotations"])
        out["lvd_f_s"] = timed_materialize(defs, ["lvd_f", "lvd_f_eval"])
        out["lvd_f_in_process_s"] = lvd_f_in_process(cat, store)
        out["hq_finetune_set_s"] = timed_materialize(defs, ["hq_finetune_set"])
        out["kept"] = int(cat.scalar("SELECT count(*) FROM lvd_f"))
        out["catalog_mb"] = _folder_mb(settings.catalog_data_uri) + os.path.getsize(cat.config.local_file) / 2**20
        out["data_path_rss_mb"] = rss.mb  # the SQL-side assets; the model phase below is its own figure
        # Dagster runs each step in a process of its own, which never holds another catalog's
        # buffers: close this one's before the model phase.
        from svd_dag.lake import release_lake

        release_lake(cat.config)
        rss.peak = 0

        m = min(n, embedding_clips)
        small = load_settings({"SVD_DAG_HOME": os.path.join(home, "b")})
        scat = Catalog.from_settings(small)
        build_catalog(scat, m)
        build_embeddings(scat, Store(small.storage_uri), m)
        sdefs = build_defs(small)
        out["embedding_clips"] = m
        out["aesthetic_s"] = timed_materialize(sdefs, ["aesthetic_scores"])
        out["caption_similarity_s"] = timed_materialize(sdefs, ["caption_similarity"])
        out["model_phase_rss_mb"] = rss.mb
    out["peak_rss_mb"] = max(out["data_path_rss_mb"], out["model_phase_rss_mb"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="100000", help="N, or a comma-separated list (each runs in its own process)")
    ap.add_argument("--embedding-clips", type=int, default=2_000)
    args = ap.parse_args()
    sizes = [int(float(x)) for x in args.clips.split(",")]
    if len(sizes) == 1:
        r = run_one(sizes[0], args.embedding_clips)
        print(json.dumps(r))
        print(f"scale: clips={r['clips']} lvd_f_s={r['lvd_f_s']:.2f} peak_rss_mb={r['peak_rss_mb']:.0f}")
        return
    rows = []
    for n in sizes:  # a fresh process per N: its peak RSS is its own
        done = subprocess.run([sys.executable, __file__, "--clips", str(n), "--embedding-clips", str(args.embedding_clips)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"clips={n}: failed\n{done.stderr[-3000:]}", flush=True)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-2]))
        print(done.stdout.strip().splitlines()[-2], flush=True)
        print(done.stdout.strip().splitlines()[-1], flush=True)
    base = rows[0]
    print("\n| clips | build s | annotations s | lvd_f s (Dagster) | lvd_f s (SQL only) | hq_finetune_set s | "
          "lvd_f us/clip (x smallest N) | aesthetic clips/s | caption_sim clips/s | data-path peak RSS MB | "
          "model-phase peak RSS MB | catalog MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = r["lvd_f_in_process_s"] / r["clips"] * 1e6
        per0 = base["lvd_f_in_process_s"] / base["clips"] * 1e6
        print(f"| {r['clips']:,} | {r['build_s']:.1f} | {r['annotations_s']:.2f} | {r['lvd_f_s']:.2f} | "
              f"{r['lvd_f_in_process_s']:.2f} | {r['hq_finetune_set_s']:.2f} | {per:.2f} ({per / per0:.2f}x) | "
              f"{r['embedding_clips'] / r['aesthetic_s']:.0f} | {r['embedding_clips'] / r['caption_similarity_s']:.0f} | "
              f"{r['data_path_rss_mb']:.0f} | {r['model_phase_rss_mb']:.0f} | {r['catalog_mb']:.0f} |")


if __name__ == "__main__":
    main()
