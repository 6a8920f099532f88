"""Per-annotator CPU throughput in clips per second, per clip against batched across clips.

    .venv/bin/python benchmarks/annotators.py [--repeat N] [--threads 1,2] [--only craft,clip]

Clips are bikes.mp4's (the bundled real footage), scored from their stored 2-fps samples
(512 px wide) exactly as the assets read them: motion uses every sample, CRAFT and CLIP the
first, middle and last, CoCa the middle one. bikes.mp4 cuts into only a handful of clips, too
few for batching across clips to show, so they are repeated (cycled) up to `--clips` clips
(the output says so): a repeated clip costs what the original does.

Each annotator is measured in the same run two ways, through the scorers the assets use
(svd_dag/curation/frame_annotators.py):

* per clip: one `scorer.score([frames])` call per clip, as the assets scored clips before
  annotators batched (CLIP: a clip's frames in one forward; CRAFT: a clip's 3 frames in one
  forward, and also one frame per forward in easyocr's NCHW layout, which is what the
  pre-batching detector did, against the asset's CPU default now, one frame per forward in
  NHWC; CoCa: one `generate` per clip);
* batched: `scorer.score(frames of --batch-clips clips)` per call, the model taking
  `batch_frames` frames per forward across those clips (CLIP/CoCa 32, CRAFT 8; CLIP also at
  the other `--clip-batch-frames`). For Farneback, which has no model, "batched" is one
  `score()` over all clips with one worker thread per available CPU.

Model loading is timed separately (imports done beforehand). Each figure is the median of
`--repeat` timed passes after one warm-up call (not timed). CLIP and CoCa are random-init
(no weights in the model store): they cost what trained ones do per image, except that a
random CoCa never stops early, so its captions always run to the 20-token cap (the asset
default). torch's and OpenCV's thread counts are set explicitly for each `--threads` value.
Peak RSS is the process's peak so far (getrusage), so it only grows down the table.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
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
from svd_dag.curation.devices import Placement  # noqa: E402
from svd_dag.curation.video_scan import SampleConfig  # noqa: E402
from svd_dag.settings import bundled_samples_dir  # noqa: E402
from svd_dag.storage import Store  # noqa: E402

ANNOTATORS = ("motion", "craft", "clip", "coca")


def bikes_clips(out_dir: str) -> tuple[list[list], list[list]]:
    """(all 2-fps samples, key frames) of each of bikes.mp4's clips, decoded as the assets do."""
    src = str(bundled_samples_dir())
    cascade, sampling = CascadeConfig(), SampleConfig()
    res = process_video(ClipPassTask(os.path.join(src, "bikes.mp4"), "bikes", src, out_dir, cascade, sampling, 1.0,
                                     scan_key(cascade, sampling, 1.0, "bench")))
    store = Store(out_dir)
    by_id = {}
    for which in ("all", "keyframes"):
        for clip, frames, err in iter_clip_frames(store, res["clips"], which):
            if err is None:
                by_id.setdefault(clip["clip_id"], {})[which] = frames
    both = [v for v in by_id.values() if len(v) == 2]
    return [v["all"] for v in both], [v["keyframes"] for v in both]


def cycled(items: list, n: int) -> list:
    return [items[i % len(items)] for i in range(n)] if items else []


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def clips_per_s(score, clips: list[list], batch_clips: int, repeat: int, warm_clips: int) -> tuple[float, float]:
    """Median clips/s of scoring `clips`, `batch_clips` clips per `score` call, and the spread
    (max/min - 1) of the timed passes; one untimed warm-up call on `warm_clips` clips first."""
    score(clips[:max(1, min(warm_clips, len(clips)))])
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(0, len(clips), batch_clips):
            score(clips[i:i + batch_clips])
        runs.append(time.perf_counter() - t)
    return len(clips) / statistics.median(runs), max(runs) / min(runs) - 1


def warm_for(batch_frames: int, frames_per_clip: int) -> int:
    """Clips in a warm-up call that fills one forward of `batch_frames` frames."""
    return max(1, math.ceil(batch_frames / max(1, frames_per_clip)))


class Table:
    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, threads, name, load, per_clip, batched, note=""):
        ratio = batched[0] / per_clip[0] if per_clip and batched else None
        self.rows.append((threads, name, load, per_clip, batched, ratio, rss_mb(), note))
        # Printed as measured too, so an interrupted run still shows what it got.
        print(f"  [{threads}t] {name}: load {_fmt(load, 1)} s, per clip {_rate(per_clip)}, batched {_rate(batched)}"
              f", ratio {_fmt(ratio, 2)}, peak RSS {rss_mb():.0f} MB {note}", flush=True)

    def print(self):
        head = (f"{'thr':>3}  {'annotator':<50} {'load s':>6} {'per clip':>9} {'batched':>9} {'ratio':>6} "
                f"{'spread':>11} {'RSS MB':>7}")
        print("\n" + head + "\n" + "-" * len(head))
        for threads, name, load, per_clip, batched, ratio, rss, note in self.rows:
            spread = "/".join(f"{r[1] * 100:.0f}%" for r in (per_clip, batched) if r)
            print(f"{threads:>3}  {name:<50} {_fmt(load, 1):>6} {_fmt(per_clip and per_clip[0], 2):>9} "
                  f"{_fmt(batched and batched[0], 2):>9} {_fmt(ratio, 2):>6} {spread:>11} {rss:>7.0f}"
                  + (f"  {note}" if note else ""))
        print("clips/s; ratio = batched / per clip; spread = (slowest / fastest timed pass - 1) of per clip/batched;"
              " RSS = process peak so far")


def _fmt(x, digits):
    return "-" if x is None else f"{x:.{digits}f}"


def _rate(r):
    return "-" if not r else f"{r[0]:.2f} clips/s (spread {r[1] * 100:.0f}%)"


def main() -> None:
    import cv2
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per figure (median); default 3")
    ap.add_argument("--threads", default="1", help="comma list of torch/OpenCV thread counts, e.g. 1,2")
    ap.add_argument("--clips", type=int, default=16, help="clips measured (bikes' clips cycled up to this)")
    ap.add_argument("--batch-clips", type=int, default=16, help="clips per batched score() call")
    ap.add_argument("--clip-batch-frames", default="16,32,48", help="CLIP frames per forward, batched mode")
    ap.add_argument("--craft-batch-frames", default="8", help="CRAFT frames per forward, batched mode")
    ap.add_argument("--coca-clips", type=int, default=8, help="clips for CoCa (slow on the CPU)")
    ap.add_argument("--only", default=",".join(ANNOTATORS), help=f"subset of {','.join(ANNOTATORS)}")
    args = ap.parse_args()
    # open_clip warns "initialized randomly" for every build: the rows say RANDOM already.
    logging.getLogger().setLevel(logging.ERROR)
    only = set(args.only.split(","))
    thread_counts = [int(t) for t in args.threads.split(",")]

    from svd_dag.curation.threads import available_cpus

    print(f"{os.cpu_count()} cores ({available_cpus()} available to this process), torch {torch.__version__}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = Table()
    with tempfile.TemporaryDirectory() as out:
        all_base, key_base = bikes_clips(out)
    n = max(args.clips, len(key_base))
    all_frames, keyframes = cycled(all_base, n), cycled(key_base, n)
    print(f"bikes.mp4: {len(key_base)} clips ({sum(map(len, all_base))} 2-fps samples, "
          f"{sum(map(len, key_base))} key frames, {key_base[0][0].shape[1]}x{key_base[0][0].shape[0]}); "
          + (f"REPEATED (cycled) to {n} clips so a batch of {args.batch_clips} clips exists" if n > len(key_base)
             else f"{n} clips"))
    print(f"batched = {args.batch_clips} clips per score() call; median of {args.repeat} timed passes, "
          "one warm-up call not timed")

    # Load every model once, imports done first, so "load s" is the build alone.
    t = time.perf_counter()
    from svd_dag.curation.compat import import_open_clip

    if only & {"clip", "coca"}:
        import_open_clip()
    if "craft" in only:
        import easyocr  # noqa: F401
    print(f"imports (open_clip / easyocr): {time.perf_counter() - t:.1f} s")

    from svd_dag.curation.frame_annotators import CaptionSpec, ClipSpec, CraftSpec, MotionSpec
    from svd_dag.curation.motion import FLOW_WIDTH

    loads: dict[str, float] = {}

    def build(name, spec):
        t = time.perf_counter()
        scorer = spec.build()
        loads.setdefault(name, time.perf_counter() - t)  # first build loads; later ones share the model
        return scorer

    for threads in thread_counts:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        print(f"\n== torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
              f"OpenCV threads {cv2.getNumThreads()}", flush=True)
        score1 = lambda scorer: lambda clips: [scorer.score([c]) for c in clips]  # noqa: E731

        if "motion" in only:
            single = MotionSpec(FLOW_WIDTH, "bench", workers=1).build()
            pooled = MotionSpec(FLOW_WIDTH, "bench", workers=0).build()
            per_clip = clips_per_s(score1(single), all_frames, 1, args.repeat, 1)
            spread_out = clips_per_s(pooled.score, all_frames, len(all_frames), args.repeat, 2)
            rows.add(threads, f"motion Farneback {FLOW_WIDTH}px, all samples", None, per_clip, spread_out,
                     f"batched = {available_cpus()} worker threads over all clips, OpenCV 1 thread each")

        if "craft" in only:
            per_clip = None
            for bf in [int(x) for x in args.craft_batch_frames.split(",")]:
                craft = build("craft", CraftSpec(Placement("cpu", "fp32", bf), cpu_batch_frames=bf))
                if per_clip is None:  # a clip's 3 frames go in one forward whatever bf >= 3: measured once
                    per_clip = clips_per_s(score1(craft), keyframes, 1, args.repeat, 1)
                batched = clips_per_s(craft.score, keyframes, args.batch_clips, args.repeat, warm_for(bf, 3))
                rows.add(threads, f"CRAFT real weights, 3 fr, batch_frames {bf}", loads["craft"], per_clip,
                         batched, "per clip = a clip's 3 frames in one forward")
            # before: one frame per forward in easyocr's NCHW layout, per clip (the baseline), against
            # the asset's CPU default now: one frame per forward in NHWC, clips batched
            before = build("craft", CraftSpec(Placement("cpu", "fp32", 1), channels_last=False))
            before_rate = clips_per_s(score1(before), keyframes, 1, args.repeat, 1)
            now = build("craft", CraftSpec(Placement("cpu", "fp32", 1)))
            now_rate = clips_per_s(now.score, keyframes, args.batch_clips, args.repeat, 1)
            rows.add(threads, "CRAFT real weights, 3 fr, 1 frame/forward: NCHW per clip -> NHWC batched",
                     loads["craft"], before_rate, now_rate, "per clip = before (NCHW); batched = the asset's CPU default")

        if "clip" in only:
            per_clip_rate = None
            for bf in [int(x) for x in args.clip_batch_frames.split(",")]:
                clip = build("clip", ClipSpec("ViT-B-32", None, Placement("cpu", "fp32", bf)))
                assert clip.model.weights == "random"
                if per_clip_rate is None:  # a clip's 3 frames fit in any of these batch sizes: measured once
                    per_clip_rate = clips_per_s(score1(clip), keyframes, 1, args.repeat, 1)
                batched = clips_per_s(clip.score, keyframes, args.batch_clips, args.repeat, warm_for(bf, 3))
                rows.add(threads, f"CLIP ViT-B-32 RANDOM init, 3 fr, batch_frames {bf}", loads["clip"],
                         per_clip_rate, batched)

        if "coca" in only:
            coca = build("coca", CaptionSpec(None, "coca_ViT-B-32", 20, Placement("cpu", "fp32", 32)))
            assert [c.weights for c in coca.ready] == ["random"], [c.name for c in coca.ready]
            clips = keyframes[:args.coca_clips]
            per_clip = clips_per_s(score1(coca), clips, 1, args.repeat, 1)
            batched = clips_per_s(coca.score, clips, args.batch_clips, args.repeat, len(clips))
            rows.add(threads, "CoCa ViT-B-32 RANDOM init, 20 tok, middle fr", loads["coca"], per_clip,
                     batched, f"{len(clips)} clips, all in one generate() when batched")

    rows.print()


if __name__ == "__main__":
    main()
