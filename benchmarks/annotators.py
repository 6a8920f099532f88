"""Per-annotator throughput on CPU, in clips per second, on bikes.mp4's clips.

    .venv/bin/python benchmarks/annotators.py [--repeat N]

Each clip is scored from its stored 2-fps samples (512 px wide), exactly as the assets do:
motion uses every sample, OCR / CLIP / captions the first, middle and last. Model loading
is timed separately (it happens once per asset run). Random-init CLIP and CoCa cost the
same per image as trained ones, except that a random CoCa never stops early: its captions
always run to the token cap (20 here, the asset default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from svd_dag.curation.annotate import iter_clip_frames  # noqa: E402
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key  # noqa: E402
from svd_dag.curation.cuts import CascadeConfig  # noqa: E402
from svd_dag.curation.video_scan import SampleConfig  # noqa: E402
from svd_dag.settings import bundled_samples_dir  # noqa: E402
from svd_dag.storage import Store  # noqa: E402


def _clips_with_frames(out_dir: str, which: str):
    src = str(bundled_samples_dir())
    cascade, sampling = CascadeConfig(), SampleConfig()
    res = process_video(ClipPassTask(os.path.join(src, "bikes.mp4"), "bikes", src, out_dir, cascade, sampling, 1.0,
                                     scan_key(cascade, sampling, 1.0, "bench")))
    return [(c, f) for c, f, err in iter_clip_frames(Store(out_dir), res["clips"], which) if err is None]


def _timed(fn, items, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for clip, frames in items:
            fn(frames)
        runs.append(time.perf_counter() - t)
    return len(items) / statistics.median(runs)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        all_frames = _clips_with_frames(out, "all")
        keyframes = _clips_with_frames(out, "keyframes")

        from svd_dag.curation.motion import clip_motion
        rows.append(("motion (Farneback, all 2-fps samples)", 0.0, _timed(clip_motion, all_frames, args.repeat)))

        t = time.perf_counter()
        from svd_dag.curation.ocr import get_text_detector
        ocr = get_text_detector()
        load = time.perf_counter() - t
        rows.append(("ocr (CRAFT, 3 frames)", load,
                     _timed(lambda fr: [ocr.text_area_fraction(f) for f in fr], keyframes, args.repeat)))

        t = time.perf_counter()
        from svd_dag.curation.clip_model import embed_images, load_clip
        model = load_clip("ViT-B-32", None)
        load = time.perf_counter() - t
        rows.append(("clip_embeddings (ViT-B-32, 3 frames)", load,
                     _timed(lambda fr: embed_images(model, fr), keyframes, args.repeat)))

        import numpy as np

        from svd_dag.curation.aesthetic import load_aesthetic_head, score_embeddings
        from svd_dag.model_store import ModelStore
        shared = str(REPO.parent / "shared" / "weights")
        head = load_aesthetic_head("ViT-B-32", ModelStore(out, out, (shared,)))
        emb = [(c, embed_images(model, f)) for c, f in keyframes]
        rows.append(("aesthetic (LAION head on embeddings)", 0.0,
                     _timed(lambda e: score_embeddings(head, np.asarray(e)), emb, args.repeat)))

        t = time.perf_counter()
        from svd_dag.curation.captioners import CocaCaptioner
        coca = CocaCaptioner("coca_ViT-B-32", None, max_tokens=20)
        coca.load()
        load = time.perf_counter() - t
        rows.append(("captions (CoCa ViT-B-32, 20 tokens)", load, _timed(coca.caption, keyframes, 1)))
    print(f"\n{'annotator':<40} {'load s':>7} {'clips/s':>8}")
    for name, load, rate in rows:
        print(f"{name:<40} {load:>7.1f} {rate:>8.2f}")


if __name__ == "__main__":
    main()
