"""Curation of a corpus on one machine: the local process pool vs. Ray started on this machine.

    .venv/bin/python benchmarks/corpus.py [--videos N] [--repeat R] [--batch-clips B] [--skip-ray]

The corpus (cached in benchmarks/out/corpus/ with a manifest; re-encoded when RECIPE changes): the
first N (48) windows of the bundled sample videos, 2 s, 4 s and the rest of each from offsets 0,
0.4, 0.8 ... s, re-encoded with libx264 as tests/synth.py writes its videos. Each round runs both
backends, alternating which goes first: the scan (`process_video` per video through
`LocalProcessExecutor(0)`, its pool started inside the timing, or `RayExecutor`, a 1-CPU task per
video), then Farneback motion in batches (`score_in_process`, threads here, or `score_on_ray`,
which runs a spec holding no model as plain 1-CPU Ray tasks on the workers warm from the scan: no
actors). Ray is a fresh `ray.init(address="local")` on 127.0.0.1 each round, as a Dagster step with
`LocalRay` starts it; its sockets must be loopback and its processes gone after `ray.shutdown()`
(leftovers are ended by pid). Both backends must give identical results. The last line is
`corpus: videos=N local_s=<s> ray_s=<s> ratio=<ray/local> identical=<yes|no|n/a>` (medians of
the curation wall, scan + motion, Ray's start-up excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

# Ray reads these when first imported (in `Rounds.ray`): every address on 127.0.0.1, no token
# auth, no usage reports; and never join a cluster named in the environment.
os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

# Ray and the Dagster assets are imported where used: the pool's spawn workers import this file
# as their __main__ and should pay only for what process_video needs (these).
import av  # noqa: E402
import psutil  # noqa: E402

from svd_dag import settings, storage  # noqa: E402
from svd_dag.curation import annotate, clip_pass, executor, frame_annotators, inventory, threads, video_scan  # noqa: E402

OUT_DIR = REPO / "benchmarks" / "out"
VIDEOS_DIR, MANIFEST = OUT_DIR / "corpus" / "videos", OUT_DIR / "corpus" / "manifest.json"
RUN_DIR = OUT_DIR / "corpus_run"  # <backend>/: the storage root each backend writes samples to
SOURCES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
WINDOWS_S, OFFSET_STEP_S, MIN_WINDOW_S = (2.0, 4.0, None), 0.4, 2.0  # None: the rest from the offset
# Bump "version" when the encoding changes: a cached corpus with another recipe is rebuilt.
RECIPE = {"codec": "libx264", "crf": "18", "preset": "veryfast", "x264-params": "no-mbtree=1", "threads": 1,
          "pix_fmt": "yuv420p", "audio": "dropped", "windows_s": [2.0, 4.0, "rest"], "offset_step_s": OFFSET_STEP_S,
          "version": 1}
TARGET_RATIO = 1.3  # the bound on Ray's overhead on one machine: ray / local curation wall
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def plan_corpus(n_videos: int) -> list[dict]:
    """The first `n_videos` windows: offsets 0, 0.4, 0.8 ... s, each source in turn, 2 s / 4 s / rest."""
    plan, seen, infos = [], set(), {}
    for name in SOURCES:
        with av.open(str(settings.bundled_samples_dir() / name)) as c:
            s = c.streams.video[0]
            infos[name] = (Fraction(s.average_rate), sum(1 for _ in c.decode(s)), s.codec_context.width,
                           s.codec_context.height)
    for k in range(int(max(n / fps for fps, n, *_ in infos.values()) / OFFSET_STEP_S) + 1):
        for name, (fps, total, width, height) in infos.items():
            start = round(k * OFFSET_STEP_S * fps)
            for length_s in WINDOWS_S if total - start >= round(MIN_WINDOW_S * fps) else ():
                frames = total - start if length_s is None else round(length_s * fps)
                if start + frames <= total and (name, start, frames) not in seen and len(plan) < n_videos:
                    seen.add((name, start, frames))
                    plan.append({"name": f"{Path(name).stem}_s{start:04d}_n{frames:04d}.mp4", "source": name,
                                 "start_frame": start, "frames": frames, "fps": str(fps), "width": width,
                                 "height": height, "window": "rest" if length_s is None else f"{length_s:g}s",
                                 "offset_s": round(float(start / fps), 3)})
    if len(plan) < n_videos:
        raise SystemExit(f"the bundled samples give only {len(plan)} windows; ask for --videos {len(plan)} or fewer")
    return plan


def encode_window(item: dict, target: Path) -> None:
    """Frames [start_frame, start_frame + frames) of the item's source, re-encoded per RECIPE."""
    fps, first, tmp = Fraction(item["fps"]), item["start_frame"], target.with_suffix(".tmp.mp4")
    with av.open(str(settings.bundled_samples_dir() / item["source"])) as c, av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = item["width"], item["height"], "yuv420p"
        vs.codec_context.thread_count, vs.codec_context.time_base = 1, 1 / fps
        vs.options = {"crf": RECIPE["crf"], "preset": RECIPE["preset"], "x264-params": RECIPE["x264-params"] + ":threads=1"}
        for i, decoded in enumerate(c.decode(c.streams.video[0])):
            if first <= i < first + item["frames"]:
                frame = av.VideoFrame.from_ndarray(decoded.to_ndarray(format="yuv420p"), format="yuv420p")
                frame.pts, frame.time_base = i - first, 1 / fps
                out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    os.replace(tmp, target)


def build_corpus(n_videos: int, rebuild: bool) -> list[dict]:
    """The planned windows, encoded into VIDEOS_DIR unless cached there under the same recipe."""
    plan = plan_corpus(n_videos)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    if rebuild or manifest.get("recipe") != RECIPE:
        shutil.rmtree(VIDEOS_DIR, ignore_errors=True)
        manifest = {"recipe": RECIPE, "videos": {}}
    VIDEOS_DIR.mkdir(parents=True, exist_ok=True)
    todo = [v for v in plan if not (VIDEOS_DIR / v["name"]).exists() or v["name"] not in manifest["videos"]]
    print(f"corpus: {len(plan) - len(todo)} of {len(plan)} videos cached in {VIDEOS_DIR.relative_to(REPO)}"
          + (f", encoding {len(todo)} ..." if todo else ""), flush=True)
    for v in todo:
        encode_window(v, VIDEOS_DIR / v["name"])
        data = (VIDEOS_DIR / v["name"]).read_bytes()
        manifest["videos"][v["name"]] = {**v, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True))  # after each: an interrupted build resumes
    return plan


def inventory_rows(plan: list[dict]) -> list[dict]:
    """The raw_videos rows of the corpus (sha256, probe), as the `raw_videos` asset makes them."""
    store, rows = storage.Store(str(VIDEOS_DIR)), []
    for v in plan:
        row = inventory.inventory_one(store, store.uri(v["name"]))
        if row["status"] != "ok" or row["frame_count"] != v["frames"]:
            raise SystemExit(f"{v['name']} unreadable or not of {v['frames']} frames: {row.get('reason') or row}")
        rows.append({**row, **{k: v[k] for k in ("source", "window", "offset_s")}})
    if len({r["sha256"] for r in rows}) != len(rows):
        raise SystemExit("two corpus videos have the same bytes (the asset would count them once)")
    return rows


def describe_corpus(videos: list[dict]) -> list[str]:
    """One line for the whole corpus, then one per source (windows, offsets, size, frames)."""
    digest = hashlib.sha256(json.dumps(sorted((v["uri"].rsplit("/", 1)[-1], v["sha256"]) for v in videos)).encode())
    lines = [f"corpus: {len(videos)} videos, {sum(v['frame_count'] for v in videos)} frames, "
             f"{sum(v['frame_count'] / v['fps'] for v in videos):.1f} s of video, "
             f"{sum(v['size_bytes'] for v in videos) / 2**20:.1f} MiB, in {VIDEOS_DIR.relative_to(REPO)} "
             f"(digest of names + sha256s {digest.hexdigest()[:16]})"]
    for src in SOURCES:
        mine = [v for v in videos if v["source"] == src]
        windows = ", ".join(f"{sum(v['window'] == w for v in mine)} x {w}" for w in dict.fromkeys(v["window"] for v in mine))
        lines += [f"  {src}: {len(mine)} windows ({windows}; offsets {min(v['offset_s'] for v in mine):g}-"
                  f"{max(v['offset_s'] for v in mine):g} s), {mine[0]['width']}x{mine[0]['height']} @ "
                  f"{mine[0]['fps']:.4g} fps, {sum(v['frame_count'] for v in mine)} frames"] if mine else []
    return lines


def is_ray(p, workers: bool = True) -> bool:
    """Whether `p` is one of Ray's processes (only its system ones, gcs_server, raylet, agents,
    when not `workers`); the rest are the pool's workers and multiprocessing's resource tracker."""
    with contextlib.suppress(psutil.Error):
        cmd = " ".join(p.cmdline())
        head = cmd.split()[0] if cmd.strip() else ""
        if "default_worker.py" in cmd or (head.startswith("ray::") and "Agent" not in head):
            return workers
        return p.name() in ("gcs_server", "raylet") or "/ray/" in cmd or head.startswith("ray::")
    return False


def usage() -> tuple[float, float]:
    """(CPU seconds of this process and its descendants, each with the children it reaped: an ended
    pool worker counts in this process's, a Ray worker in its raylet's; MiB of RSS over the workers)."""
    cpu, rss = 0.0, 0
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += 0 if p.pid == os.getpid() or is_ray(p, workers=False) else p.memory_info().rss
    return cpu, rss / 2**20


def alive(p) -> bool:
    """Whether `p` still runs (a zombie no one reaps does not)."""
    with contextlib.suppress(psutil.Error):
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    return False


class Work:
    """The `clips` tasks and the `motion_scores` spec, as the assets build them (defaults)."""

    def __init__(self, videos: list[dict], min_clip_s: float, batch_clips: int):
        from svd_dag.assets.annotators import MotionConfig
        from svd_dag.assets.curation import CLIPS_CODE, ClipsConfig

        cfg, motion = ClipsConfig(), MotionConfig()
        self.cascade = clip_pass.cascade_from_dicts(
            [p.model_dump() for p in cfg.passes], min_scene_len_s=cfg.min_scene_len_s,
            confirm_hist_distance=cfg.confirm_hist_distance, detect_width=cfg.detect_width)
        self.sampling = video_scan.SampleConfig(sample_fps=cfg.sample_fps, sample_width=cfg.sample_width)
        self.min_clip_s, self.batch_clips = min_clip_s, batch_clips
        self.key = clip_pass.scan_key(self.cascade, self.sampling, min_clip_s, CLIPS_CODE)
        # Longest first: the pool's last minutes then run short videos, not one long one alone.
        self.videos = sorted(videos, key=lambda v: (-(v["frame_count"] or 0), v["uri"]))
        self.spec = frame_annotators.MotionSpec(motion.flow_width, f"farneback-benchmark@{motion.flow_width}px",
                                                motion.workers)
        self.identity = self.spec.identity()

    def run(self, name: str, runner, score_on) -> dict:
        """Scan every video through the executor `runner`, then score motion over every clip with the
        stream `score_on(spec, identity, store)`: timed, with CPU seconds and the workers' peak RSS
        (looked at as each video and batch comes back)."""
        root = RUN_DIR / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        cpus_each = runner.threads_per_item(len(self.videos))
        tasks = [clip_pass.ClipPassTask(v["uri"], v["sha256"], str(VIDEOS_DIR), str(root), self.cascade, self.sampling,
                                        self.min_clip_s, self.key, {}, {}, cpus_each) for v in self.videos]
        (cpu0, _), t0, outcomes, runs, peak = usage(), time.perf_counter(), [], [], 0.0
        for outcome in runner.imap(clip_pass.process_video, tasks):
            outcomes.append(outcome)
            peak = max(peak, usage()[1])
        t1 = time.perf_counter()
        clips = sorted((c for o in outcomes if o.ok for c in o.value["clips"]),
                       key=lambda c: (c["samples_uri"], c["clip_id"]))  # the asset's worklist order
        batches = [clips[i:i + self.batch_clips] for i in range(0, len(clips), self.batch_clips)]
        for _, run in score_on(self.spec, self.identity, storage.Store(str(root)))(iter(batches)):
            runs.append(run)
            peak = max(peak, usage()[1])
        t2 = time.perf_counter()
        return {"backend": name, "root": str(root), "outcomes": outcomes, "clips": clips, "batches": len(batches),
                "rows": [r for run in runs for r in run.rows], "failures": [f for run in runs for f in run.failures],
                "scan_s": t1 - t0, "motion_s": t2 - t1, "curation_s": t2 - t0, "cpu_s": usage()[0] - cpu0,
                "worker_mib": peak}


def fingerprint(result: dict) -> dict:
    """What must be equal between backends, with each backend's storage root taken out."""
    root = result["root"] + "/"

    def rel(record: dict) -> str:
        return repr(sorted((k, x.replace(root, "<root>/") if isinstance(x, str) else x) for k, x in record.items()))

    out = {"scans": {}, "clips": {}, "failures": {f["clip_id"]: rel(f) for f in result["failures"]},
           "motion": {r["clip_id"]: rel({k: x for k, x in r.items() if k != "annotated_at"}) for r in result["rows"]},
           "samples": {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in Path(root, "samples").rglob("*.parquet")}}
    for o in result["outcomes"]:
        v = dict(o.value) if o.ok else {"failed": o.error}
        out["clips"].update((c["clip_id"], rel(c)) for c in v.pop("clips", []))
        out["scans"][o.item.sha256] = rel(v)
    return out


@contextlib.contextmanager
def environ(**values: str):
    """The block runs with these environment variables set; they are put back as they were after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Rounds:
    """Both backends round after round (a fresh Ray each time), and what the Ray checks found."""

    def __init__(self, work: Work, cpus: int):
        self.work, self.cpus, self.results = work, cpus, {"local": [], "ray": []}
        self.listening, self.not_loopback, self.ended_by_pid, self.ray_version = 0, [], 0, None
        self.seen, self.still = [], []  # Ray processes seen before each shutdown, those alive at the end

    def local(self) -> dict:
        pool = executor.LocalProcessExecutor(0)
        return {**self.work.run("local", pool, annotate.score_in_process), "workers": pool.max_workers}

    def ray(self) -> dict:
        """A fresh single-node Ray started in this process (`import ray` + `ray.init`: the start-up a
        Dagster step with `LocalRay` pays), the work on it, and Ray shut down whatever happens."""
        tmp, started = tempfile.mkdtemp(prefix="corpus-ray-"), False
        try:
            with environ(HOME=tmp, RAY_TMPDIR=tmp):
                t0 = time.perf_counter()
                import ray

                started = True  # from here on, Ray must be shut down
                gcs = ray.init(address="local", num_cpus=self.cpus, include_dashboard=False, logging_level="WARNING",
                               log_to_driver=False, _node_ip_address="127.0.0.1").address_info["gcs_address"]
                up = time.perf_counter() - t0
            from svd_dag.curation.ray_annotators import score_on_ray
            from svd_dag.curation.ray_executor import RayExecutor, RayOptions

            self.check_loopback(ray, gcs)
            self.ray_version, options = ray.__version__, RayOptions()  # the Ray this process is connected to
            res = self.work.run("ray", RayExecutor(options), lambda *a: score_on_ray(options, *a))
            self.check_loopback(ray, gcs)
            return {**res, "startup_s": up}
        finally:
            if started:
                self.shut_down(ray)
            shutil.rmtree(tmp, ignore_errors=True)

    def check_loopback(self, ray, gcs: str) -> None:
        """Ray's node and GCS on 127.0.0.1, and every socket this benchmark's processes listen on loopback."""
        nodes = {n["NodeManagerAddress"] for n in ray.nodes()}
        if nodes != {"127.0.0.1"} or not gcs.startswith("127.0.0.1:"):
            raise RuntimeError(f"Ray left loopback: nodes at {nodes}, GCS at {gcs}")
        ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
        listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in ours]
        self.listening = max(self.listening, len(listening))
        self.not_loopback += [f"{c.laddr.ip}:{c.laddr.port} (pid {c.pid})" for c in listening if c.laddr.ip not in LOOPBACK]

    def shut_down(self, ray) -> None:
        """`ray.shutdown()`, then any Ray process alive 15 s later is ended by pid (and counted)."""
        procs = [p for p in psutil.Process().children(recursive=True) if is_ray(p)]
        self.seen += procs
        if ray.is_initialized():
            ray.shutdown()
        deadline = time.monotonic() + 15
        while (left := [p for p in procs if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.ended_by_pid += len(left)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()

    def run(self, repeat: int, skip_ray: bool) -> None:
        """`repeat` rounds, local first in odd rounds and Ray first in even ones."""
        for r in range(repeat):
            for backend in ["local"] if skip_ray else ["local", "ray"][:: 1 if r % 2 == 0 else -1]:
                self.results[backend].append(getattr(self, backend)())
                print(f"  round {r + 1} {backend}: {round_line(self.results[backend][-1])}", file=sys.stderr, flush=True)
        self.still = [p.pid for p in self.seen if alive(p)]


def round_line(r: dict) -> str:
    """One round of one backend, as the progress lines show it."""
    up = f"start-up {r['startup_s']:.2f} s, " if "startup_s" in r else ""
    return (f"{up}scan {r['scan_s']:.2f} s, motion {r['motion_s']:.2f} s, curation {r['curation_s']:.2f} s, "
            f"CPU {r['cpu_s']:.1f} s")


def medians(results: list[dict]) -> dict[str, float]:
    """The medians over one backend's rounds."""
    m = {k: statistics.median(r.get(k, 0.0) for r in results)
         for k in ("startup_s", "scan_s", "motion_s", "curation_s", "cpu_s", "worker_mib")}
    return {**m, "total_s": statistics.median(r["curation_s"] + r.get("startup_s", 0.0) for r in results)}


def print_header(argv: list[str], videos: list[dict], work: Work, cpus: int, repeat: int) -> None:
    """The command, the machine, the corpus and the work."""
    import cv2
    import svd_dag

    info = Path("/proc/cpuinfo")  # Linux; elsewhere what platform says
    model = next((ln.split(":", 1)[1].strip() for ln in (info.read_text() if info.exists() else "").splitlines()
                  if ln.startswith("model name")), platform.processor())
    print(f"\n# Corpus curation: local pool vs. Ray on this machine\ncommand: "
          f"{' '.join(['.venv/bin/python benchmarks/corpus.py', *argv])}")
    print(f"machine: {os.cpu_count()} CPUs ({model}), {cpus} available to this process, load avg "
          f"{os.getloadavg()[0]:.2f}; python {platform.python_version()}, av {av.__version__}, opencv {cv2.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\ncode: svd_dag from {Path(svd_dag.__file__).parent}")
    print("\n".join(describe_corpus(videos)))
    print(f"work: scan key {work.key} (ClipsConfig defaults, min_clip_s {work.min_clip_s:g}), longest video first; "
          f"motion {work.spec.flow_width} px, batches of {work.batch_clips} clips; {repeat} round(s), local first in "
          "odd rounds, Ray first in even ones; a fresh Ray (ray.init ... ray.shutdown) per round", flush=True)


def print_table(rounds: Rounds, stats: dict[str, dict], cpus: int) -> None:
    """What the first local round found, then the medians per backend."""
    first = rounds.results["local"][0]
    n_clips, ok = len(first["clips"]), [o for o in first["outcomes"] if o.ok]
    print(f"\nresults: {len(ok)} of {len(first['outcomes'])} videos scanned, {n_clips} clips (dropped as short: "
          f"{sum(o.value['dropped_short'] for o in ok)}), {len(first['rows'])} motion rows, {len(first['failures'])} "
          f"failures, {first['batches']} batches\n\nmedians of {len(rounds.results['local'])} round(s) (CPU s: this "
          "process and its descendants; RSS: summed over the pool's / Ray's worker processes):\n| backend | Ray "
          "start-up s | scan s | motion s | clips/s | curation s (scan + motion) | total incl. start-up s | CPU s | "
          "workers' peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = {"local": f"local pool ({first['workers']} processes; motion: {cpus} threads here)",
              "ray": f"Ray on this machine ({cpus} CPUs; 1 CPU per video; motion: 1-CPU tasks, {cpus} at once)"}
    for backend, m in stats.items():
        print(f"| {labels[backend]} | {m['startup_s']:.2f} | {m['scan_s']:.2f} | {m['motion_s']:.2f} | "
              f"{n_clips / m['curation_s']:.2f} | {m['curation_s']:.2f} | {m['total_s']:.2f} | {m['cpu_s']:.1f} | "
              f"{m['worker_mib']:.0f} |")
    print(f"peak RSS of this process (ru_maxrss, corpus build included): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB\n")


def print_ray(rounds: Rounds, lo: dict, ra: dict) -> str:
    """The ratio ray/local against TARGET_RATIO, the CPU ratio and Ray's checks; returns the ratio."""
    ratio = ra["curation_s"] / lo["curation_s"]
    per_round = (f"{r['curation_s'] / q['curation_s']:.2f}" for r, q in zip(rounds.results["ray"], rounds.results["local"]))
    print(f"ratio ray/local, curation (scan + motion, start-up excluded, medians): {ratio:.3f} -> target < "
          f"{TARGET_RATIO}: {'PASS' if ratio < TARGET_RATIO else 'FAIL'}   (per round: {', '.join(per_round)})\n"
          f"  scan {ra['scan_s'] / lo['scan_s']:.2f}, motion {ra['motion_s'] / lo['motion_s']:.2f}; including Ray's "
          f"start-up ({ra['startup_s']:.2f} s): {ra['total_s'] / lo['curation_s']:.2f}; CPU seconds "
          f"{ra['cpu_s'] / lo['cpu_s']:.2f} (less moved by other load than wall)")
    bad = rounds.not_loopback
    print(f"Ray {rounds.ray_version}: most sockets listened on by this benchmark's processes at once: "
          f"{rounds.listening}, ever not on loopback: {len(bad)}" + (f" ({', '.join(bad)})" if bad else ""))
    print(f"Ray processes seen: {len(rounds.seen)}; ended by pid after ray.shutdown(): {rounds.ended_by_pid}; "
          f"still alive: {len(rounds.still)}")
    return f"{ratio:.2f}"


def identical(results: dict[str, list[dict]]) -> tuple[str, list[str]]:
    """'yes', 'no' or 'n/a' (a single run), and the parts that differ from the first local round's."""
    ref, others = fingerprint(results["local"][0]), results["local"][1:] + results["ray"]
    diffs = [f"{r['backend']}: {part}: {len(set(x.items()) ^ set(ref[part].items()))} entries not the same"
             for r in others for part, x in fingerprint(r).items() if x != ref[part]]
    return ("n/a" if not others else "no" if diffs else "yes"), diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=48, help="corpus size (default 48)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, each running both backends (default 3)")
    ap.add_argument("--batch-clips", type=int, default=16, help="clips per motion batch, both backends (default 16)")
    ap.add_argument("--min-clip-s", type=float, default=1.0, help="the clips asset's min_clip_s (default 1, its default)")
    ap.add_argument("--skip-ray", action="store_true", help="only the local pool")
    ap.add_argument("--rebuild-corpus", action="store_true", help="re-encode the corpus even when cached")
    args = ap.parse_args(argv)
    videos, cpus = inventory_rows(build_corpus(args.videos, args.rebuild_corpus)), threads.available_cpus()
    work, repeat = Work(videos, args.min_clip_s, max(1, args.batch_clips)), max(1, args.repeat)
    print_header(sys.argv[1:] if argv is None else argv, videos, work, cpus, repeat)
    rounds = Rounds(work, cpus)
    rounds.run(repeat, args.skip_ray)
    stats = {b: medians(rs) for b, rs in rounds.results.items() if rs}
    print_table(rounds, stats, cpus)
    ratio = print_ray(rounds, stats["local"], stats["ray"]) if "ray" in stats else "n/a"
    same, diffs = identical(rounds.results)
    print(f"identical: {same}" + "".join(f"\n  {d}" for d in diffs) + f"\nload avg at the end: {os.getloadavg()[0]:.2f}")
    ray_s = f"{stats['ray']['curation_s']:.2f}" if "ray" in stats else "n/a"
    print(f"corpus: videos={len(videos)} local_s={stats['local']['curation_s']:.2f} ray_s={ray_s} ratio={ratio} "
          f"identical={same}")
    return 0 if same != "no" and not rounds.still and not rounds.not_loopback else 1


if __name__ == "__main__":
    raise SystemExit(main())
