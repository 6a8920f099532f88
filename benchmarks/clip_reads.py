"""Training reads: a clip's frames by reference into its raw video vs from `clip_shards`.

    .venv/bin/python benchmarks/clip_reads.py [--clips N] [--repeat R] [--max-height H]

On benchmarks/out/bikes_x30.mp4 (7,500 frames, 640x272, built by benchmarks/curation.py if
missing) it cuts N evenly spaced 2-second clips, shards them with the same code as the
`clip_shards` asset (local storage, in-process), and then times `ClipDataset.__getitem__`
(the trainer's data path: frame choice, decode, resize/crop) over the same items read
(a) by reference: seek in the 5-minute raw video, decode from the keyframe before the clip;
(b) from the shards: one ranged read of the clip's mp4 member, decode in memory.
It prints the one-off transcode cost, bytes, and per-item read time with (b)/(a).
Variants run round-robin; medians of R rounds. With `--s3` the raw video and the shards
live on a local S3 server (moto on 127.0.0.1, as the tests use): every read goes through
s3fs, so the request pattern counts, but loopback hides real network latency.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import start_s3  # noqa: E402
from svd_dag.curation.executor import Outcome  # noqa: E402
from svd_dag.curation.shards import EncodeSettings, shard_clips, shard_index  # noqa: E402
from svd_dag.storage import Store  # noqa: E402
from svd_dag.training.data import ClipDataset  # noqa: E402

CLIP_FRAMES = 50  # 2 s at 25 fps


def serial_map(fn, items) -> list[Outcome]:
    return [Outcome(item, fn(item)) for item in items]


def clips_of(video: Path, n: int, total: int = 7500, fps: float = 25.0) -> list[dict]:
    step = (total - CLIP_FRAMES) // max(1, n - 1)
    sha = hashlib.sha256(video.read_bytes()).hexdigest()  # reads by reference check the bytes are the named ones
    return [{"clip_id": f"c{i:04d}", "video_sha256": sha, "video_uri": str(video), "start_frame": i * step,
             "end_frame": i * step + CLIP_FRAMES, "start_s": i * step / fps, "end_s": (i * step + CLIP_FRAMES) / fps,
             "duration_s": CLIP_FRAMES / fps, "fps": fps, "width": 640, "height": 272, "caption": "bikes"}
            for i in range(n)]


def time_reads(dataset: ClipDataset) -> float:
    dataset.rng.seed(0)  # the same frame offsets for both variants
    start = time.perf_counter()
    for i in range(len(dataset)):
        assert "skip" not in dataset[i], dataset.rows[i]["clip_id"]
    return (time.perf_counter() - start) / len(dataset)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-height", type=int, default=576)
    ap.add_argument("--frames", type=int, default=14, help="frames per item (stage II full: 14)")
    ap.add_argument("--fps", type=float, default=7.0, help="target fps of the sampled frames")
    ap.add_argument("--size", default="256x384", help="HxW the items are resized/cropped to")
    ap.add_argument("--s3", action="store_true", help="raw video and shards on a loopback S3 server (moto)")
    args = ap.parse_args(argv)

    import pyarrow as pa
    from curation import build_test_video

    video = build_test_video(30)
    raw_root, video_uri = str(video.parent), str(video)
    server = start_s3() if args.s3 else None
    if server is not None:
        raw = Store("s3://bench-raw/videos")
        raw.fs.mkdir("bench-raw")
        Store("s3://bench-out").fs.mkdir("bench-out")
        raw_root, video_uri = raw.root, raw.write_bytes(video.name, video.read_bytes())
    clips = [{**c, "video_uri": video_uri} for c in clips_of(video, args.clips)]
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store("s3://bench-out/run" if server is not None else tmp)
        settings = EncodeSettings(max_height=args.max_height).validate()
        start = time.perf_counter()
        run = shard_clips(store, clips, settings, settings.key(), serial_map, raw_root)
        transcode_s = time.perf_counter() - start
        assert not run.failures, run.failures
        index = shard_index(pa.Table.from_pylist(clips), run.rows).to_pylist()
        variants = {
            "(a) by reference (seek + decode in the raw video)": ClipDataset(clips, args.frames, args.fps, height, width),
            "(b) from clip_shards (ranged read + decode)": ClipDataset(index, args.frames, args.fps, height, width),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeat):
            for name, dataset in variants.items():
                times[name].append(time_reads(dataset))
        shard_bytes = sum(s["bytes"] for s in run.shards)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}")
    if server is not None:
        server.stop()
    print(f"storage: {'s3:// on a loopback moto server' if server is not None else 'local disk'}")
    print(f"source: {video.name} (640x272, 7,500 frames, {video.stat().st_size / 2**20:.1f} MB); {args.clips} clips of "
          f"{CLIP_FRAMES} frames; items: {args.frames} frames at {args.fps:g} fps -> {height}x{width}")
    print(f"transcode once: {transcode_s:.1f} s ({transcode_s / args.clips * 1000:.0f} ms/clip), "
          f"{len(run.shards)} shard(s), {shard_bytes / 2**20:.1f} MB (max_height {args.max_height}, crf {settings.crf}, "
          f"preset {settings.preset})")
    base = statistics.median(times[next(iter(variants))])
    print(f"| variant | ms/item (median of {args.repeat}) | ratio to (a) |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts) * 1000:.1f} | {statistics.median(ts) / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
