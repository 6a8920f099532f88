"""Curation of a corpus on one machine: the local process pool vs. Ray started on this machine.

Run from the repository root:

    .venv/bin/python benchmarks/corpus.py [--videos N] [--repeat R] [--batch-clips B] [--skip-ray]

The corpus (built once, cached under benchmarks/out/corpus/, re-encoded only when missing or
when the recipe below changes): windows cut out of the bundled sample videos
(`svd_dag.settings.bundled_samples_dir()`: bikes.mp4 640x272 25 fps 10 s, bigbuckbunny.mp4
1280x720 25 fps 5.28 s, carphone_pristine.mp4 and carphone_distorted.mp4 176x144 29.97 fps
4 s). For offsets k = 0, 0.4, 0.8, ... s into each source, in turn, three windows: 2 s, 4 s
and the rest of the video from the offset ("full"), skipping windows that do not fit, are
shorter than 2 s, or repeat one already taken; the first N (default 48) are the corpus.
Each is decoded with PyAV and re-encoded with libx264 as tests/synth.py writes its videos
(crf 18, preset veryfast, no-mbtree, yuv420p) plus one encoder thread, so the bytes are
deterministic; audio is dropped. The header states the count, frames and duration.

Per backend, timed in this process with `time.perf_counter` (the Ray start-up is timed apart):

- scan: the `clips` asset's per-video work, `process_video` (one decode: 3-pass cut cascade
  + 2-fps JPEG samples written to storage), through the executor's `imap`, longest video
  first and `threads_per_item` threads per video, as the asset builds its tasks (ClipsConfig
  defaults, min_clip_s 1). Local: `LocalProcessExecutor(0)` (one spawn process per CPU; the
  pool starts inside the timing, as it does in the asset). Ray: `RayExecutor` (a task per
  video asking for 1 CPU, as SVD_DAG_RAY_CPUS_PER_VIDEO defaults).
- motion: the `motion_scores` asset's work over every clip found, in batches of
  --batch-clips (ordered by samples file, clip id, as the asset's worklist): Farneback via
  `MotionSpec` (256 px, workers 0 = one thread per CPU) / `score_clips` on the stored samples.
  Local: `score_in_process` (this process, threads). Ray: `score_on_ray`, an actor pool of
  one 1-CPU actor per cluster CPU (the asset's default for motion), two batches queued per
  actor; actor start-up is inside the timing, as it is in the asset.

Ray here is what `SVD_DAG_EXECUTOR=ray` with no address runs (dagster-ray's `LocalRay`):
`ray.init` in this process starting a fresh single-node Ray (address="local", num_cpus = this
process's CPUs, no dashboard), not a `Cluster` of several raylets. Before Ray is imported
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, RAY_AUTH_MODE=disabled and RAY_USAGE_STATS_ENABLED=0 are
set (and RAY_ADDRESS removed) so every address stays on 127.0.0.1; the node is also given
127.0.0.1, and HOME / RAY_TMPDIR point at a temporary folder while it starts. The benchmark
checks that every socket its Ray processes listen on is loopback, stops Ray with
`ray.shutdown()` in a `finally`, and ends any Ray process still alive after it by pid.

Results must be identical between the backends: the clip rows (samples paths taken relative
to each backend's storage root), each video's scan record, the bytes (sha256) of every
samples file, and the motion rows (all columns but `annotated_at`, floats compared exactly).

Memory and CPU are sampled every 0.1 s over this process and its descendants, by role: this
process (the driver), the workers (pool processes / Ray worker processes) and Ray's own
processes (gcs_server, raylet, agents). RSS sums count shared pages once per process; PSS
sums share them out, and are the better total. "other" CPU is the machine's busy CPU time
minus this benchmark's: other engineers' processes on the same cores (noise).

--repeat R runs R rounds of (local, Ray) in that order; Ray is started once, before its
first round; medians are reported. The default is 1: each round takes minutes and the
scan/motion split of each backend is printed, so noise shows; run it twice when the "other"
CPU column is not near zero. The last line is
`corpus: videos=N local_s=<s> ray_s=<s> ratio=<ray/local> identical=<yes|no>`
(curation wall: scan + motion, Ray start-up excluded).
"""

from __future__ import annotations

import os

# Ray reads these when first imported: keep every address on 127.0.0.1, no token auth, no
# usage reports; and never join a cluster named in the environment.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

# Heavy imports (av, svd_dag, ray) live inside the functions: the local pool's spawn workers
# import this file as their __main__, and should pay only for what process_video needs.

OUT_DIR = REPO / "benchmarks" / "out"
CORPUS_DIR = OUT_DIR / "corpus"
VIDEOS_DIR = CORPUS_DIR / "videos"  # the raw root the scans read
MANIFEST = CORPUS_DIR / "manifest.json"
RUN_DIR = OUT_DIR / "corpus_run"  # <backend>/: the storage root each backend writes samples to

SOURCES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
WINDOWS_S = (2.0, 4.0, None)  # None: the rest of the video from the offset
OFFSET_STEP_S = 0.4
MIN_WINDOW_S = 2.0
DEFAULT_VIDEOS = 48
# Bump when the encoding changes: a cached corpus with another recipe is rebuilt.
RECIPE = {"codec": "libx264", "crf": "18", "preset": "veryfast", "x264-params": "no-mbtree=1", "threads": 1,
          "pix_fmt": "yuv420p", "audio": "dropped", "windows_s": [2.0, 4.0, "rest"], "offset_step_s": OFFSET_STEP_S,
          "version": 1}
TARGET_RATIO = 1.3  # the bound on Ray's overhead on one machine: ray / local curation wall
SAMPLE_EVERY_S = 0.1
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


# --------------------------------------------------------------------------- the corpus


def source_info(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return {"fps": Fraction(s.average_rate), "frames": n, "width": s.codec_context.width,
                "height": s.codec_context.height}


def plan_corpus(n_videos: int) -> list[dict]:
    """The first `n_videos` windows: offsets 0, 0.4, 0.8 ... s, each source in turn, 2 s / 4 s / rest."""
    from svd_dag.settings import bundled_samples_dir

    infos = {name: source_info(bundled_samples_dir() / name) for name in SOURCES}
    plan, seen, k = [], set(), 0
    while len(plan) < n_videos:
        added = False
        for name in SOURCES:
            info = infos[name]
            fps, total = info["fps"], info["frames"]
            start = round(k * OFFSET_STEP_S * fps)
            if total - start < round(MIN_WINDOW_S * fps):
                continue
            for length_s in WINDOWS_S:
                frames = total - start if length_s is None else round(length_s * fps)
                if start + frames > total or (name, start, frames) in seen:
                    continue
                seen.add((name, start, frames))
                added = True
                plan.append({"name": f"{Path(name).stem}_s{start:04d}_n{frames:04d}.mp4", "source": name,
                             "start_frame": start, "frames": frames, "fps": str(fps),
                             "window": "rest" if length_s is None else f"{length_s:g}s",
                             "offset_s": round(float(start / fps), 3), "width": info["width"], "height": info["height"]})
                if len(plan) == n_videos:
                    return plan
        if not added:
            raise SystemExit(f"the bundled samples give only {len(plan)} windows; ask for --videos {len(plan)} or fewer")
        k += 1
    return plan


def encode_window(src: Path, item: dict, target: Path) -> None:
    import av

    fps = Fraction(item["fps"])
    first, last = item["start_frame"], item["start_frame"] + item["frames"]
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        planes = [f.to_ndarray(format="yuv420p") for i, f in enumerate(c.decode(stream)) if first <= i < last]
    assert len(planes) == item["frames"], (item, len(planes))
    tmp = target.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = item["width"], item["height"], "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {"crf": RECIPE["crf"], "preset": RECIPE["preset"], "x264-params": RECIPE["x264-params"] + ":threads=1"}
        vs.codec_context.time_base = 1 / fps
        for pts, plane in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts, frame.time_base = pts, 1 / fps
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    os.replace(tmp, target)


def build_corpus(n_videos: int, rebuild: bool) -> list[dict]:
    """The planned windows, encoded into VIDEOS_DIR unless cached there under the same recipe."""
    from svd_dag.settings import bundled_samples_dir

    plan = plan_corpus(n_videos)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    if rebuild or manifest.get("recipe") != RECIPE:
        shutil.rmtree(VIDEOS_DIR, ignore_errors=True)
        manifest = {"recipe": RECIPE, "videos": {}}
    VIDEOS_DIR.mkdir(parents=True, exist_ok=True)
    todo = [v for v in plan if not (VIDEOS_DIR / v["name"]).exists() or v["name"] not in manifest["videos"]]
    if todo:
        print(f"encoding {len(todo)} of {len(plan)} corpus videos into {VIDEOS_DIR.relative_to(REPO)} ...", flush=True)
        t0 = time.perf_counter()
        for v in todo:
            target = VIDEOS_DIR / v["name"]
            encode_window(bundled_samples_dir() / v["source"], v, target)
            manifest["videos"][v["name"]] = {**v, "bytes": target.stat().st_size}
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        print(f"  encoded in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        print(f"corpus: all {len(plan)} videos cached in {VIDEOS_DIR.relative_to(REPO)}", flush=True)
    return plan


def inventory(plan: list[dict]) -> list[dict]:
    """The raw_videos rows of the corpus (sha256, probe), as the `raw_videos` asset makes them."""
    from svd_dag.curation.inventory import inventory_one
    from svd_dag.storage import Store

    store = Store(str(VIDEOS_DIR))
    rows = []
    for v in plan:
        row = inventory_one(store, store.uri(v["name"]))
        if row["status"] != "ok":
            raise SystemExit(f"corpus video unreadable: {row['reason']}")
        if row["frame_count"] != v["frames"]:
            raise SystemExit(f"{v['name']}: probe says {row['frame_count']} frames, {v['frames']} were written")
        rows.append({**row, **{k: v[k] for k in ("source", "window", "offset_s", "start_frame")}})
    if len({r["sha256"] for r in rows}) != len(rows):
        raise SystemExit("two corpus videos have the same bytes (the asset would count them once)")
    return rows


# --------------------------------------------------------------------------- process watch


def _role(p) -> str:
    import psutil

    try:
        cmd = " ".join(p.cmdline())
        name = p.name()
    except psutil.Error:
        return "gone"
    head = cmd.split()[0] if cmd.strip() else ""
    if "default_worker.py" in cmd or (head.startswith("ray::") and "Agent" not in head):
        return "ray_worker"
    if name in ("gcs_server", "raylet") or "/ray/" in cmd or cmd.startswith("ray::"):
        return "ray_system"
    return "pool"  # spawn pool workers and their resource tracker


class ProcessWatch:
    """Samples this process and its descendants: per-role peak sums of RSS and PSS, CPU seconds
    per role, and every process seen by role (so Ray's can be checked gone at the end)."""

    def __init__(self, every_s: float = SAMPLE_EVERY_S):
        import psutil

        self.me, self.every_s = psutil.Process(), every_s
        self.roles: dict[tuple[int, float], str] = {}  # (pid, create_time) -> role
        self.procs: dict[tuple[int, float], object] = {}
        self.cpu: dict[tuple[int, float], float] = {}  # latest user+system seconds seen
        self.lock, self._stop = threading.Lock(), threading.Event()
        self.peaks: dict[str, list[float]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True, name="process-watch")
        self._thread.start()

    def _key_role(self, p):
        key = (p.pid, p.create_time())
        if key not in self.roles:
            self.roles[key] = "driver" if p.pid == self.me.pid else _role(p)
            self.procs[key] = p
        return key, self.roles[key]

    def sample(self) -> None:
        import psutil

        rss: dict[str, float] = {}
        pss: dict[str, float] = {}
        try:
            kids = self.me.children(recursive=True)
        except psutil.Error:
            kids = []
        with self.lock:
            for p in [self.me, *kids]:
                try:
                    key, role = self._key_role(p)
                    mem = p.memory_full_info()
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                rss[role] = rss.get(role, 0) + mem.rss
                pss[role] = pss.get(role, 0) + mem.pss
                self.cpu[key] = t.user + t.system
            for role in rss:
                peak = self.peaks.setdefault(role, [0.0, 0.0])
                peak[0], peak[1] = max(peak[0], rss[role]), max(peak[1], pss[role])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def begin(self) -> dict:
        """A phase starts: peaks reset; returns the baseline for `end`."""
        import psutil

        self.sample()
        with self.lock:
            self.peaks = {}
            return {"cpu": dict(self.cpu), "machine": _busy(psutil.cpu_times()), "t": time.perf_counter()}

    def end(self, base: dict) -> dict:
        """CPU seconds by role since `base` (plus 'other': the rest of the machine), peaks in MiB."""
        import psutil

        self.sample()
        machine = _busy(psutil.cpu_times()) - base["machine"]
        with self.lock:
            cpu: dict[str, float] = {}
            for key, seconds in self.cpu.items():
                role = self.roles[key]
                cpu[role] = cpu.get(role, 0.0) + seconds - base["cpu"].get(key, 0.0)
            ours = sum(cpu.values())
            cpu["other"] = max(0.0, machine - ours)
            peaks = {role: (r / 2**20, p / 2**20) for role, (r, p) in self.peaks.items()}
        return {"cpu": cpu, "peaks": peaks, "wall": time.perf_counter() - base["t"]}

    def seen(self, *roles: str) -> list:
        with self.lock:
            return [self.procs[k] for k, r in self.roles.items() if r in roles]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _busy(t) -> float:
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


# --------------------------------------------------------------------------- the curation work


class Work:
    """The `clips` tasks and the `motion_scores` spec, as the assets build them (defaults)."""

    def __init__(self, videos: list[dict], min_clip_s: float, batch_clips: int):
        from svd_dag.assets.annotators import MotionConfig
        from svd_dag.assets.curation import CLIPS_CODE, ClipsConfig
        from svd_dag.curation.clip_pass import cascade_from_dicts, scan_key
        from svd_dag.curation.frame_annotators import MotionSpec
        from svd_dag.curation.video_scan import SampleConfig

        cfg = ClipsConfig()
        self.cascade = cascade_from_dicts([p.model_dump() for p in cfg.passes], min_scene_len_s=cfg.min_scene_len_s,
                                          confirm_hist_distance=cfg.confirm_hist_distance, detect_width=cfg.detect_width)
        self.sampling = SampleConfig(sample_fps=cfg.sample_fps, sample_width=cfg.sample_width)
        self.min_clip_s, self.batch_clips = min_clip_s, batch_clips
        self.key = scan_key(self.cascade, self.sampling, min_clip_s, CLIPS_CODE)
        # Longest first: the pool's last minutes then run short videos, not one long one alone.
        self.videos = sorted(videos, key=lambda v: (-(v["frame_count"] or 0), v["uri"]))
        motion = MotionConfig()
        self.spec = MotionSpec(motion.flow_width, f"farneback-benchmark@{motion.flow_width}px", motion.workers)
        self.identity = self.spec.identity()

    def tasks(self, executor, storage_root: str) -> list:
        from svd_dag.curation.clip_pass import ClipPassTask

        threads = executor.threads_per_item(len(self.videos))
        return [ClipPassTask(v["uri"], v["sha256"], str(VIDEOS_DIR), storage_root, self.cascade, self.sampling,
                             self.min_clip_s, self.key, {}, {}, threads) for v in self.videos]


def run_backend(name: str, work: Work, watch: ProcessWatch, executor, make_stream) -> dict:
    """Scan every video through `executor.imap`, then motion over every clip through `make_stream`."""
    from svd_dag.curation.clip_pass import process_video
    from svd_dag.storage import Store

    root = RUN_DIR / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    store = Store(str(root))
    tasks = work.tasks(executor, str(root))

    base = watch.begin()
    t0 = time.perf_counter()
    outcomes, first = [], None
    for outcome in executor.imap(process_video, tasks):
        outcomes.append(outcome)
        first = first if first is not None else time.perf_counter() - t0
    scan_s = time.perf_counter() - t0
    scan_use = watch.end(base)

    clips = sorted((c for o in outcomes if o.ok for c in o.value["clips"]), key=lambda c: (c["samples_uri"], c["clip_id"]))
    batches = [clips[i:i + work.batch_clips] for i in range(0, len(clips), work.batch_clips)]
    base = watch.begin()
    t0 = time.perf_counter()
    stream = make_stream(store)
    rows, failures, motion_first = [], [], None
    for _batch, run in stream(iter(batches)):
        rows += run.rows
        failures += run.failures
        motion_first = motion_first if motion_first is not None else time.perf_counter() - t0
    motion_s = time.perf_counter() - t0
    motion_use = watch.end(base)
    return {"backend": name, "root": str(root), "outcomes": outcomes, "clips": clips, "rows": rows,
            "failures": failures, "scan_s": scan_s, "motion_s": motion_s, "scan_first_s": first,
            "motion_first_s": motion_first, "scan_use": scan_use, "motion_use": motion_use,
            "frames": sum(o.value["frames_decoded"] for o in outcomes if o.ok),
            "batches": len(batches), "nodes": sorted({o.node for o in outcomes if o.node})}


def fingerprint(result: dict) -> dict:
    """What must be equal between backends, with each backend's storage root taken out."""
    root = result["root"] + "/"

    def rel(value):
        return value.replace(root, "<root>/") if isinstance(value, str) else value

    scans, clips = {}, {}
    for o in result["outcomes"]:
        if not o.ok:
            scans[o.item.sha256] = ("failed", rel(o.error))
            continue
        v = dict(o.value)
        for c in v.pop("clips"):
            clips[c["clip_id"]] = repr(sorted((k, rel(x)) for k, x in c.items()))
        scans[o.item.sha256] = repr(sorted((k, rel(x)) for k, x in v.items()))
    samples = {}
    for path in sorted(Path(result["root"], "samples").rglob("*.parquet")):
        samples[str(path.relative_to(result["root"]))] = hashlib.sha256(path.read_bytes()).hexdigest()
    motion = {r["clip_id"]: repr(sorted((k, x) for k, x in r.items() if k != "annotated_at")) for r in result["rows"]}
    failed = {f["clip_id"]: rel(f["reason"]) for f in result["failures"]}
    return {"scans": scans, "clips": clips, "samples": samples, "motion": motion, "motion_failures": failed}


def compare(a: dict, b: dict) -> list[str]:
    """Differences between two fingerprints, one line per part that differs."""
    out = []
    for part in a:
        x, y = a[part], b[part]
        if x != y:
            keys = set(x) ^ set(y)
            changed = [k for k in set(x) & set(y) if x[k] != y[k]]
            out.append(f"{part}: {len(keys)} only on one side, {len(changed)} differ "
                       f"(e.g. {sorted(keys)[:2] or sorted(changed)[:2]})")
    return out


# --------------------------------------------------------------------------- Ray on this machine


class LocalRayInstance:
    """`ray.init` in this process starting a fresh single-node Ray on 127.0.0.1; `stop()` shuts it
    down and ends, by pid, any of its processes still alive."""

    def __init__(self, cpus: int, watch: ProcessWatch):
        self.cpus, self.watch, self.tmp, self.started = cpus, watch, None, False

    def start(self) -> float:
        self.tmp = tempfile.mkdtemp(prefix="corpus-ray-")
        saved = {k: os.environ.get(k) for k in ("HOME", "RAY_TMPDIR")}
        os.environ.update(HOME=self.tmp, RAY_TMPDIR=self.tmp)
        try:
            t0 = time.perf_counter()
            import ray  # the import is part of the start-up a Dagster step pays

            self.started = True  # from here on, stop() must run
            ctx = ray.init(address="local", num_cpus=self.cpus, include_dashboard=False, logging_level="WARNING",
                           log_to_driver=False, _node_ip_address="127.0.0.1")
            elapsed = time.perf_counter() - t0
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.address = ctx.address_info["gcs_address"]
        addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
        if addresses != {"127.0.0.1"} or not self.address.startswith("127.0.0.1:"):
            raise RuntimeError(f"Ray left loopback: nodes at {addresses}, GCS at {self.address}")
        return elapsed

    def listeners(self) -> tuple[int, list[str]]:
        """(sockets this benchmark's processes listen on, those not on loopback)."""
        import psutil

        ours = {self.watch.me.pid, *(p.pid for p in self.watch.me.children(recursive=True))}
        listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in ours]
        return len(listening), [f"{c.laddr.ip}:{c.laddr.port} (pid {c.pid})" for c in listening
                                if c.laddr.ip not in LOOPBACK]

    def stop(self) -> int:
        """Shut Ray down; returns how many of its processes had to be ended by pid afterwards."""
        if not self.started:
            return 0
        import psutil
        import ray

        self.watch.sample()  # note the last workers before they go
        if ray.is_initialized():
            ray.shutdown()
        procs = self.watch.seen("ray_worker", "ray_system")
        deadline = time.monotonic() + 15
        alive = procs
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.2)
        for p in alive:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, still = psutil.wait_procs(alive, timeout=5)
        for p in still:
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.started = False
        return len(alive)


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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


def describe_corpus(videos: list[dict]) -> list[str]:
    frames = sum(v["frame_count"] for v in videos)
    seconds = sum(v["frame_count"] / v["fps"] for v in videos)
    mib = sum(v["size_bytes"] for v in videos) / 2**20
    lines = [f"corpus: {len(videos)} videos, {frames} frames, {seconds:.1f} s of video ({seconds / 60:.2f} min), "
             f"{mib:.1f} MiB, in {VIDEOS_DIR.relative_to(REPO)}"]
    for src in SOURCES:
        mine = [v for v in videos if v["source"] == src]
        if not mine:
            continue
        windows: dict[str, int] = {}
        for v in mine:
            windows[v["window"]] = windows.get(v["window"], 0) + 1
        f = sum(v["frame_count"] for v in mine)
        lines.append(f"  {src}: {len(mine)} windows ({', '.join(f'{n} x {w}' for w, n in windows.items())}; "
                     f"offsets {min(v['offset_s'] for v in mine):g}-{max(v['offset_s'] for v in mine):g} s), "
                     f"{mine[0]['width']}x{mine[0]['height']} @ {mine[0]['fps']:.4g} fps, {f} frames, "
                     f"{sum(v['frame_count'] / v['fps'] for v in mine):.1f} s")
    return lines


def _mb(use: dict, role: str) -> str:
    rss, pss = use["peaks"].get(role, (0.0, 0.0))
    return f"{rss:.0f} / {pss:.0f}" if rss else "-"


def _cpu(use: dict) -> str:
    c = use["cpu"]
    return " / ".join(f"{c.get(r, 0.0):.1f}" for r in ("driver", "workers", "ray_system", "other"))


def _use_roles(use: dict) -> dict:
    """Pool processes and Ray workers are both 'workers' in the tables."""
    cpu = dict(use["cpu"])
    cpu["workers"] = cpu.pop("pool", 0.0) + cpu.pop("ray_worker", 0.0)
    peaks = dict(use["peaks"])
    w = [peaks.pop(r) for r in ("pool", "ray_worker") if r in peaks]
    if w:
        peaks["workers"] = (sum(x[0] for x in w), sum(x[1] for x in w))
    return {**use, "cpu": cpu, "peaks": peaks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=DEFAULT_VIDEOS, help=f"corpus size (default {DEFAULT_VIDEOS})")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (local, Ray); medians reported (default 1)")
    ap.add_argument("--batch-clips", type=int, default=16, help="clips per motion batch, both backends (default 16)")
    ap.add_argument("--min-clip-s", type=float, default=1.0, help="the clips asset's min_clip_s (default 1, its default)")
    ap.add_argument("--skip-ray", action="store_true", help="only the local pool")
    ap.add_argument("--rebuild-corpus", action="store_true", help="re-encode the corpus even when cached")
    args = ap.parse_args(argv)
    cmd = ".venv/bin/python benchmarks/corpus.py " + " ".join(argv if argv is not None else sys.argv[1:])

    import av
    import cv2
    import svd_dag
    from svd_dag.curation.annotate import score_in_process
    from svd_dag.curation.executor import LocalProcessExecutor
    from svd_dag.curation.threads import available_cpus

    plan = build_corpus(args.videos, args.rebuild_corpus)
    videos = inventory(plan)
    work = Work(videos, args.min_clip_s, max(1, args.batch_clips))
    cpus = available_cpus()

    print()
    print("# Corpus curation: local pool vs. Ray on this machine")
    print(f"command: {cmd.strip()}")
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {cpus} available to this process, "
          f"load avg {os.getloadavg()[0]:.2f}; python {platform.python_version()}, av {av.__version__}, "
          f"opencv {cv2.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"code: svd_dag from {Path(svd_dag.__file__).parent}")
    for line in describe_corpus(videos):
        print(line)
    print(f"work: scan key {work.key} (ClipsConfig defaults, min_clip_s {args.min_clip_s:g}), longest video first; "
          f"motion {work.spec.flow_width} px, batches of {work.batch_clips} clips; repeat={args.repeat}")
    print(flush=True)

    watch = ProcessWatch()
    ray_instance = None if args.skip_ray else LocalRayInstance(cpus, watch)
    results: dict[str, list[dict]] = {"local": [], "ray": []}
    startup_s, listen_total, listen_bad, ray_left, ray_version = None, 0, [], 0, None
    try:
        for r in range(max(1, args.repeat)):
            local = LocalProcessExecutor(0)
            res = run_backend("local", work, watch, local, lambda store: score_in_process(work.spec, work.identity, store))
            res["workers"] = local.max_workers
            results["local"].append(res)
            print(f"  round {r + 1} local: scan {res['scan_s']:.2f} s, motion {res['motion_s']:.2f} s",
                  file=sys.stderr, flush=True)
            if ray_instance is None:
                continue
            if startup_s is None:
                base = watch.begin()
                startup_s = ray_instance.start()
                startup_use = _use_roles(watch.end(base))
                import ray

                ray_version = ray.__version__
                n, bad = ray_instance.listeners()
                listen_total, listen_bad = max(listen_total, n), listen_bad + bad
            from svd_dag.curation.ray_annotators import score_on_ray
            from svd_dag.curation.ray_executor import RayExecutor, RayOptions

            options = RayOptions()  # the Ray this process is connected to; 1 CPU per video, as the defaults
            executor = RayExecutor(options)
            res = run_backend("ray", work, watch, executor,
                              lambda store: score_on_ray(options, work.spec, work.identity, store))
            n, bad = ray_instance.listeners()
            listen_total, listen_bad = max(listen_total, n), listen_bad + bad
            results["ray"].append(res)
            print(f"  round {r + 1} ray: scan {res['scan_s']:.2f} s, motion {res['motion_s']:.2f} s",
                  file=sys.stderr, flush=True)
    finally:
        if ray_instance is not None:
            ray_left = ray_instance.stop()
        ray_seen = len(watch.seen("ray_worker", "ray_system"))
        still = [p.pid for p in watch.seen("ray_worker", "ray_system") if _alive(p)]
        watch.stop()

    # ----------------------------------------------------------------- results
    first = results["local"][0]
    ref = fingerprint(first)
    diffs = []
    for res in results["local"][1:] + results["ray"]:
        diffs += [f"{res['backend']}: {d}" for d in compare(ref, fingerprint(res))]
    compared = len(results["local"]) + len(results["ray"]) > 1
    identical = "n/a" if not compared else "yes" if not diffs else "no"
    n_clips = len(first["clips"])
    failed_videos = [o for o in first["outcomes"] if not o.ok]

    def med(backend: str, key: str) -> float:
        return statistics.median(r[key] for r in results[backend])

    print()
    print(f"results: {len(videos) - len(failed_videos)} of {len(videos)} videos scanned, {first['frames']} frames decoded, "
          f"{n_clips} clips ({sum(o.value['dropped_short'] for o in first['outcomes'] if o.ok)} dropped as short), "
          f"{len(first['rows'])} motion rows, {len(first['failures'])} motion failures, "
          f"{first['batches']} batches of <= {work.batch_clips}")
    for o in failed_videos[:5]:
        print(f"  failed: {o.error}")
    print()
    print("| backend | Ray start-up s | scan s | videos/s | frames/s | motion s | clips/s (motion) | curation s "
          "(scan + motion) | clips/s (curation) | total incl. start-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for backend in ("local", "ray"):
        if not results[backend]:
            continue
        scan, motion = med(backend, "scan_s"), med(backend, "motion_s")
        curation = statistics.median(r["scan_s"] + r["motion_s"] for r in results[backend])
        up = startup_s if backend == "ray" else 0.0
        label = (f"local pool ({first['workers']} processes; motion: threads here)" if backend == "local" else
                 f"Ray on this machine (ray.init, {cpus} CPUs; {cpus} actors for motion)")
        print(f"| {label} | {up:.2f} | {scan:.2f} | {len(videos) / scan:.2f} | {first['frames'] / scan:.0f} | "
              f"{motion:.2f} | {n_clips / motion:.1f} | {curation:.2f} | {n_clips / curation:.2f} | {curation + up:.2f} |")
        rows.append((backend, scan, motion, curation, up))
    if args.repeat > 1:
        for backend in ("local", "ray"):
            for i, r in enumerate(results[backend]):
                print(f"  round {i + 1} {backend}: scan {r['scan_s']:.2f} s, motion {r['motion_s']:.2f} s, "
                      f"curation {r['scan_s'] + r['motion_s']:.2f} s")
    print()
    print("resources per phase (last round; MiB peak RSS / PSS summed over the role's processes; CPU s: "
          "driver / workers / Ray's own processes / other processes on the machine):")
    print("| phase | wall s | first result s | driver MiB | workers MiB | Ray processes MiB | CPU s d / w / ray / other | "
          "CPU used / (wall x CPUs) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    phases = []
    if startup_s is not None:
        phases.append(("Ray start-up (ray.init)", startup_use, None))
    for backend in ("local", "ray"):
        if results[backend]:
            r = results[backend][-1]
            phases += [(f"{backend} scan", _use_roles(r["scan_use"]), r["scan_first_s"]),
                       (f"{backend} motion", _use_roles(r["motion_use"]), r["motion_first_s"])]
    for name, use, first_s in phases:
        ours = sum(v for k, v in use["cpu"].items() if k != "other")
        print(f"| {name} | {use['wall']:.2f} | {'-' if first_s is None else f'{first_s:.2f}'} | {_mb(use, 'driver')} | "
              f"{_mb(use, 'workers')} | {_mb(use, 'ray_system')} | {_cpu(use)} | {ours / (use['wall'] * cpus):.2f} |")
    print(f"peak RSS of this process over the whole run (ru_maxrss, incl. corpus build): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print()

    summary_ray, summary_ratio = "n/a", "n/a"
    if results["ray"]:
        (_, ls, lm, lc, _), (_, rs, rm, rc, up) = rows
        ratio = rc / lc
        summary_ray, summary_ratio = f"{rc:.2f}", f"{ratio:.2f}"
        print(f"ratio ray/local, curation (scan + motion, start-up excluded): {ratio:.2f} "
              f"-> target < {TARGET_RATIO}: {'PASS' if ratio < TARGET_RATIO else 'FAIL'}")
        print(f"  scan {rs / ls:.2f}, motion {rm / lm:.2f}; including Ray's start-up ({up:.2f} s): {(rc + up) / lc:.2f}")
        print(f"Ray {ray_version}: nodes the scan ran on: {len(results['ray'][-1]['nodes'])}; sockets listened on by this "
              f"benchmark's processes: {listen_total}, not on loopback: {len(listen_bad)}"
              + (f" ({', '.join(listen_bad)})" if listen_bad else ""))
        print(f"Ray processes seen: {ray_seen}; ended by pid after ray.shutdown(): {ray_left}; still alive: {len(still)}")
    print(f"identical: {identical}" + ("" if not diffs else "\n  " + "\n  ".join(diffs)))
    print(f"load avg at the end: {os.getloadavg()[0]:.2f}")
    print(f"corpus: videos={len(videos)} local_s={rows[0][3]:.2f} ray_s={summary_ray} ratio={summary_ratio} "
          f"identical={identical}")
    return 0 if identical != "no" and not still else 1


if __name__ == "__main__":
    raise SystemExit(main())
