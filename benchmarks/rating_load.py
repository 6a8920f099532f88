"""The rating page under load on loopback: many raters voting at once, every request sent twice.

    .venv/bin/python benchmarks/rating_load.py                      # 50 raters x 20 votes, x2, local disk
    .venv/bin/python benchmarks/rating_load.py --raters 20 --votes 32 --repeat 3
    .venv/bin/python benchmarks/rating_load.py --s3                 # votes and records on moto's S3 server

A real `svd-dag rating serve` (one uvicorn process, `RatingServer`) on 127.0.0.1 serves a
task list of `--votes` pairs (every `--gold-every`-th one a gold pair); `--raters` raters are
issued; each rater decides every pair once, and each decision is POSTed twice, the copies at
the same moment (a browser resending a vote it got no answer for), all requests of all raters
at once, each on its own connection (an asyncio client in this process, no HTTP library).

Checked, then printed: every decision answered once 200 "stored" and once 409 "duplicate";
one vote file per non-gold decision and none for gold ones; the vote files parsed with
`parse_vote_file` (as `preference_votes` reads them) give unique vote ids, exactly the
expected ones, with winners in the task's a/b terms; one decision record per decision.
Latency (request start to response end, connect included) p50/p90/p99/max, and throughput
(requests / wall time of the burst). Before the burst, one more rater decides every pair one
request at a time (each sent twice in a row): the latency of an unloaded server.
`check_burst` / `run_burst` are what tests/test_rating_load.py runs at a smaller size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from svd_dag.evaluation.votes import AXES, list_vote_files, parse_vote_file  # noqa: E402
from svd_dag.rating.raters import Raters  # noqa: E402
from svd_dag.rating.records import read_decisions  # noqa: E402
from svd_dag.rating.server import RatingServer, free_port  # noqa: E402
from svd_dag.storage import Store  # noqa: E402



@dataclass
class Burst:
    """What a burst sent and got back."""
    raters: dict[str, str]  # rater id -> token
    sent: list[dict] = field(default_factory=list)  # one per decision: rater_id, pair_id, decision_id, answers
    results: list[dict] = field(default_factory=list)  # one per request: decision_id, status, body, seconds
    wall_s: float = 0.0


def make_fixture(root: Path, pairs: int, gold_every: int, video: bytes) -> tuple[Path, dict]:
    """A task list of `pairs` pairs (every `gold_every`-th gold, 0: none) whose videos are copies
    of `video` under root/media; returns (its path, {pair_id: pair})."""
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    doc = {"version": secrets.token_hex(8), "created_at": "2026-12-01T00:00:00+00:00", "pairs": []}
    for i in range(pairs):
        gold = bool(gold_every) and i % gold_every == gold_every - 1
        sides = {}
        for s, model in (("a", f"i2v_checkpoint@{i % 3:016x}"), ("b", f"i2v_lora@{(i + 1) % 3:016x}")):
            path = media / f"{i:04d}{s}.mp4"
            path.write_bytes(video)
            sides[s] = {"model": f"gold:{'source' if s == 'a' else 'degraded'}" if gold else model, "video": str(path)}
        doc["pairs"].append({"pair_id": f"pair-{i:04d}", "pool": "main" if i % 2 else "ablation:motion",
                             "prompt_id": f"prompt-{i:04d}", "prompt": f"a prompt number {i}", "conditioning": None,
                             **sides, "gold": {"better": "a"} if gold else None})
    path = root / "tasks.json"
    path.write_text(json.dumps(doc))
    return path, {p["pair_id"]: p for p in doc["pairs"]}


def issue_raters(rating_uri: str, n: int) -> dict[str, str]:
    """n raters in the rating state folder; rater id -> token."""
    raters = Raters(Store(rating_uri))
    return {r.rater_id: r.token for r in (raters.add(f"rater-{i:03d}") for i in range(n))}


async def _post(host: str, port: int, path: str, body: bytes, timeout: float) -> tuple[int, dict, float]:
    """One POST on a fresh connection: (status, JSON body, seconds from start to the last byte)."""
    started = time.perf_counter()

    async def exchange():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    raw = await asyncio.wait_for(exchange(), timeout)
    elapsed = time.perf_counter() - started
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload or b"{}"), elapsed


async def _burst(url: str, burst: Burst, copies: int, timeout: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    jobs, keys = [], []
    for decision in burst.sent:
        token = burst.raters[decision["rater_id"]]
        body = json.dumps({k: decision[k] for k in ("pair_id", "decision_id", "answers", "seconds")}).encode()
        for _ in range(copies):
            jobs.append(_post(host, int(port), f"/r/{token}/vote", body, timeout))
            keys.append(decision["decision_id"])
    random.Random(0).shuffle(order := list(range(len(jobs))))  # the copies of one vote not always adjacent
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(jobs[i] for i in order), return_exceptions=True)
    burst.wall_s = time.perf_counter() - started
    for i, outcome in zip(order, outcomes):
        if isinstance(outcome, BaseException):
            burst.results.append({"decision_id": keys[i], "status": None, "error": repr(outcome)})
        else:
            status, body, seconds = outcome
            burst.results.append({"decision_id": keys[i], "status": status, "body": body, "seconds": seconds})


def run_burst(url: str, raters: dict[str, str], pair_ids: list[str], votes: int, copies: int = 2,
              seed: int = 0, timeout: float = 120.0) -> Burst:
    """Each rater decides `votes` pairs (random answers); every decision POSTed `copies` times,
    all at once."""
    rng = random.Random(seed)
    burst = Burst(raters=raters)
    for rater_id in raters:
        for pair_id in rng.sample(pair_ids, votes):
            burst.sent.append({"rater_id": rater_id, "pair_id": pair_id, "decision_id": secrets.token_hex(16),
                               "answers": {axis: rng.choice(["left", "right", "tie"]) for axis in AXES},
                               "seconds": round(rng.uniform(0.5, 20), 3)})
    asyncio.run(_burst(url, burst, copies, timeout))
    return burst


def run_sequential(url: str, raters: dict[str, str], pair_ids: list[str], copies: int = 2, seed: int = 1) -> Burst:
    """The unloaded case: one rater decides every pair, one request at a time (each sent
    `copies` times in a row)."""
    rng = random.Random(seed)
    burst = Burst(raters=raters)
    for rater_id in raters:
        for pair_id in pair_ids:
            burst.sent.append({"rater_id": rater_id, "pair_id": pair_id, "decision_id": secrets.token_hex(16),
                               "answers": {axis: rng.choice(["left", "right", "tie"]) for axis in AXES},
                               "seconds": 1.0})
    host, port = url.removeprefix("http://").split(":")

    async def one_by_one():
        started = time.perf_counter()
        for decision in burst.sent:
            body = json.dumps({k: decision[k] for k in ("pair_id", "decision_id", "answers", "seconds")}).encode()
            for _ in range(copies):
                status, answer, seconds = await _post(host, int(port), f"/r/{raters[decision['rater_id']]}/vote",
                                                      body, 30)
                burst.results.append({"decision_id": decision["decision_id"], "status": status, "body": answer,
                                      "seconds": seconds})
        burst.wall_s = time.perf_counter() - started

    asyncio.run(one_by_one())
    return burst


def merged(*bursts: Burst) -> Burst:
    """One Burst holding what several sent and got (to check them together)."""
    out = Burst(raters={k: v for b in bursts for k, v in b.raters.items()})
    for b in bursts:
        out.sent += b.sent
        out.results += b.results
        out.wall_s += b.wall_s
    return out


def check_burst(burst: Burst, pairs: dict[str, dict], votes_uri: str, rating_uri: str, copies: int = 2) -> dict:
    """Everything the burst must have left behind; an AssertionError says what is wrong.
    Returns counts: decisions, stored, duplicates, vote_files, vote_rows, records."""
    errors = [r for r in burst.results if r["status"] is None]
    assert not errors, f"{len(errors)} requests got no answer, e.g. {errors[:3]}"
    by_decision: dict[str, list[dict]] = {}
    for r in burst.results:
        by_decision.setdefault(r["decision_id"], []).append(r)
    for decision_id, answers in by_decision.items():
        got = sorted((r["status"], r["body"].get("status")) for r in answers)
        want = [(200, "stored")] + [(409, "duplicate")] * (copies - 1)
        assert got == want, f"decision {decision_id}: answers {got}, expected {want}"
        reveals = {json.dumps(r["body"].get("reveal"), sort_keys=True) for r in answers}
        assert len(reveals) == 1 and None not in [r["body"].get("reveal") for r in answers], reveals

    sent = {d["decision_id"]: d for d in burst.sent}
    records = {d.decision_id: d for d in read_decisions(Store(rating_uri))}
    assert set(records) == set(sent), (f"{len(set(sent) - set(records))} decisions without a record, "
                                       f"{len(set(records) - set(sent))} records not sent")
    votes = Store(votes_uri)
    files = list_vote_files(votes)
    models = {p[s]["model"] for p in pairs.values() if not p["gold"] for s in "ab"}
    rows, rejected = [], []
    for uri in files:
        good, bad = parse_vote_file(uri, votes.read_bytes(uri), models, source=os.path.relpath(uri, votes.root)
                                    if votes.is_local else uri.removeprefix(votes.root + "/"))
        rows += good
        rejected += bad
    assert not rejected, rejected[:3]
    ids = [r["vote_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} vote ids counted twice"
    non_gold = {i: d for i, d in sent.items() if not pairs[d["pair_id"]]["gold"]}
    want_ids = {f"{i}.{axis}" for i, d in non_gold.items() for axis in d["answers"]}
    assert set(ids) == want_ids, (f"{len(want_ids - set(ids))} votes lost, {len(set(ids) - want_ids)} unexpected")
    assert len(files) == len(non_gold), f"{len(files)} vote files for {len(non_gold)} non-gold decisions"
    for row in rows:  # the winner is in the task's a/b terms: undo the layout the record says was shown
        decision_id, axis = row["vote_id"].rsplit(".", 1)
        record = records[decision_id]
        shown = sent[decision_id]["answers"][axis]
        expected = "tie" if shown == "tie" else record.left if shown == "left" else ("b" if record.left == "a" else "a")
        assert row["winner"] == expected, (row, record)
        assert (row["rater_id"], row["model_a"], row["model_b"]) == (
            record.rater_id, pairs[record.pair_id]["a"]["model"], pairs[record.pair_id]["b"]["model"])
    return {"decisions": len(sent), "stored": sum(r["status"] == 200 for r in burst.results),
            "duplicates": sum(r["status"] == 409 for r in burst.results), "vote_files": len(files),
            "vote_rows": len(rows), "records": len(records)}


def latency_table(burst: Burst) -> dict:
    """p50/p90/p99/max seconds of all requests, of the stored and of the refused ones; throughput."""
    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]

    out = {}
    for name, status in (("all", None), ("stored (200)", 200), ("duplicate (409)", 409)):
        s = [r["seconds"] for r in burst.results if status is None or r["status"] == status]
        out[name] = {"n": len(s), "p50": pct(s, 0.5), "p90": pct(s, 0.9), "p99": pct(s, 0.99), "max": max(s)}
    out["throughput_rps"] = len(burst.results) / burst.wall_s
    out["wall_s"] = burst.wall_s
    return out


def _tiny_video() -> bytes:
    import numpy as np

    from svd_dag.sampling.video_io import encode_mp4

    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 96, 3), dtype=np.uint8)
    return encode_mp4(frames, 8)


class MotoProcess:
    """moto's S3 server as a subprocess on a free loopback port (not in this process: the
    load client would share its GIL); the environment to reach it."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "SVD_DAG_S3_ENDPOINT_URL": self.endpoint}
        self.proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def one_run(args, root: Path) -> tuple[dict, dict]:
    """One server, one burst: (the checks' counts, the latency table)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVD_DAG_")}
    env.update({"SVD_DAG_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1"})
    moto = None
    if args.s3:
        moto = MotoProcess(root / "moto.log")
        os.environ.update(moto.env)
        env.update(moto.env)
        bucket = f"rating-{secrets.token_hex(4)}"
        Store(f"s3://{bucket}").fs.mkdir(bucket)
        env.update({"SVD_DAG_VOTES_URI": f"s3://{bucket}/votes", "SVD_DAG_RATING_URI": f"s3://{bucket}/rating"})
    else:
        env.update({"SVD_DAG_VOTES_URI": str(root / "votes"), "SVD_DAG_RATING_URI": str(root / "rating")})
    try:
        tasks, pairs = make_fixture(root, args.votes, args.gold_every, _tiny_video())
        raters = issue_raters(env["SVD_DAG_RATING_URI"], args.raters + 1)
        probe = {"rater-000": raters.pop("rater-000")}
        if not args.s3:
            Path(env["SVD_DAG_VOTES_URI"]).mkdir(parents=True, exist_ok=True)
        with RatingServer(str(tasks), env=env, log=root / "server.log") as server:
            alone = run_sequential(server.url, probe, list(pairs))
            burst = run_burst(server.url, raters, list(pairs), args.votes, copies=2, seed=args.seed)
        counts = check_burst(merged(alone, burst), pairs, env["SVD_DAG_VOTES_URI"], env["SVD_DAG_RATING_URI"])
        return counts, {"burst": latency_table(burst), "alone": latency_table(alone)}
    finally:
        if moto is not None:
            moto.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", type=int, default=50)
    ap.add_argument("--votes", type=int, default=20, help="decisions per rater (= pairs in the task list)")
    ap.add_argument("--gold-every", type=int, default=10, help="every N-th pair is a gold pair (0: none)")
    ap.add_argument("--repeat", type=int, default=1, help="bursts, each on a fresh server and folders")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--s3", action="store_true", help="votes root and rating state on moto's S3 server (loopback)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"storage: {'s3:// on a loopback moto_server' if args.s3 else 'local disk'}; {args.raters} raters x "
          f"{args.votes} votes x 2 copies = {args.raters * args.votes * 2} requests at once")
    for i in range(args.repeat):
        root = Path(tempfile.mkdtemp(prefix="rating-load-"))
        try:
            counts, table = one_run(args, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        burst = table["burst"]
        print(f"\nrun {i + 1}: {counts['decisions']} decisions (1 rater alone, then the burst) -> {counts['stored']} "
              f"stored (200), {counts['duplicates']} duplicates refused (409); {counts['vote_files']} vote files, "
              f"{counts['vote_rows']} vote rows (ids unique, none lost), {counts['records']} decision records")
        print(f"burst: wall {burst['wall_s']:.2f} s, throughput {burst['throughput_rps']:.0f} requests/s")
        print("| requests | n | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, t in [(f"{part}, {name}", table[key][name]) for key, part in (("burst", "burst"), ("alone", "one at a time"))
                         for name in ("all", "stored (200)", "duplicate (409)")]:
            print(f"| {label} | {t['n']} | {1000 * t['p50']:.1f} | {1000 * t['p90']:.1f} | {1000 * t['p99']:.1f} | "
                  f"{1000 * t['max']:.1f} |")


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    main()
