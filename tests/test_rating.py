"""The human rating page without a browser: task list validation, create-once writes (local and
on a real S3 server, moto's), raters, and a real `svd-dag rating serve` (uvicorn on 127.0.0.1)
asked over HTTP: refused links and files, Range requests, votes stored once in the task's
a/b terms and parsed as `preference_votes` parses them, gold answers kept out of the votes,
the admin page and export, raters added and withdrawn while it runs, a second server on the
same folders, and the console commands (which never open the catalog)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rating_fixtures import get_json, http, pair, post_json, server_env, video, write_tasks
from svd_dag.evaluation.votes import AXES, list_vote_files, parse_vote_file
from svd_dag.rating.raters import RaterError, Raters
from svd_dag.rating.records import Decision, decision_path, read_decisions, vote_file_path, write_decision
from svd_dag.rating.server import RatingServer
from svd_dag.rating.stats import model_stats, rater_stats
from svd_dag.rating.tasks import TaskListError, load_task_list, media_id, parse_task_list
from svd_dag.storage import Store

REPO = Path(__file__).resolve().parent.parent
MODELS = {"i2v_checkpoint@1111", "i2v_lora@2222", "i2v_lora@3333"}


# --- the task list ---

def _doc(*pairs, version="0123456789abcdef"):
    return json.dumps({"version": version, "created_at": "2026-12-01T00:00:00Z", "pairs": list(pairs)}).encode()


def _raw_pair(pair_id="p1", **over):
    base = {"pair_id": pair_id, "pool": "main", "prompt_id": "q1", "prompt": "a kite", "conditioning": None,
            "a": {"model": "i2v_checkpoint@1111", "video": "/data/a.mp4"},
            "b": {"model": "i2v_lora@2222", "video": "/data/b.mp4"}, "gold": None}
    return {**base, **over}


def test_a_task_list_is_validated_whole_and_each_problem_names_the_file_the_pair_and_why():
    good = parse_task_list("/t/tasks.json", _doc(_raw_pair("p1"), _raw_pair("g1", gold={"better": "b"},
                           a={"model": "source", "video": "s3://b/src.mp4"},
                           b={"model": "degraded", "video": "s3://b/deg.mp4"})))
    assert [p.pair_id for p in good.pairs] == ["p1", "g1"] and good.pair("g1").gold_better == "b"
    assert good.media_uri(media_id("/data/a.mp4")) == "/data/a.mp4" and good.media_uri(media_id("/etc/passwd")) is None

    bad = _doc(_raw_pair("p1"), _raw_pair("p1"),
               _raw_pair("p2", pool="ablation motion"),
               _raw_pair("p3", a={"model": "", "video": "/data/a.mp4"}),
               _raw_pair("p4", gold={"better": "c"}),
               _raw_pair("p5", b={"model": "i2v_lora", "video": "/data/b.mp4"}),
               _raw_pair("p6", b={"model": "i2v_checkpoint@1111", "video": "/data/b.mp4"}),
               _raw_pair("p7", a={"model": "i2v_checkpoint@1111", "video": "data/a.mp4"}),
               _raw_pair("p8", conditioning="/data/frame.gif"),
               _raw_pair("p9", prompt=None, conditioning=None),  # allowed: nothing to show but the videos
               "not a pair", version="v1")
    with pytest.raises(TaskListError) as err:
        parse_task_list("s3://tasks/rating/tasks.json", bad)
    lines = str(err.value).splitlines()
    assert lines[0] == "s3://tasks/rating/tasks.json: invalid task list (10 problem(s)):"
    assert [line.strip() for line in lines[1:]] == [
        "version 'v1' is not 16 lowercase hex digits",
        "pair 1 ('p1'): duplicate pair_id (also pair 0)",
        "pair 2 ('p2'): pool 'ablation motion' may only hold letters, digits, '_', '.', ':' and '-'",
        "pair 3 ('p3'): model must be a non-empty string, got ''",
        "pair 4 ('p4'): gold must be null or {\"better\": \"a\" | \"b\"}, got {'better': 'c'}",
        "pair 5 ('p5'): b.model 'i2v_lora' must name a checkpoint as asset@data_version",
        "pair 6 ('p6'): a and b are both 'i2v_checkpoint@1111': a model against itself",
        "pair 7 ('p7'): a.video 'data/a.mp4' must be an absolute local path or an s3:// URI",
        "pair 8 ('p8'): conditioning '/data/frame.gif' must end in .png or .jpg or .jpeg",
        "pair 10: must be a JSON object, not str",
    ]
    with pytest.raises(TaskListError, match=r"^/t/x.json: not a JSON document"):
        parse_task_list("/t/x.json", b"{nope")
    with pytest.raises(TaskListError, match="no such task list file"):
        load_task_list("/nonexistent/folder/tasks.json")


# --- create-once writes ---

def test_create_bytes_gives_a_name_once_under_concurrency_and_leaves_no_staged_file(tmp_path):
    store = Store(str(tmp_path))
    barrier = threading.Barrier(12)
    results = {}

    def write(i):
        barrier.wait()
        results[i] = store.create_bytes("rating/ab/decision.csv", f"writer {i}\n".encode())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, created in results.items() if created]
    assert len(winners) == 1 and len(results) == 12
    assert (tmp_path / "rating/ab/decision.csv").read_bytes() == f"writer {winners[0]}\n".encode()
    assert os.listdir(tmp_path / "rating/ab") == ["decision.csv"]  # every staged .tmp-<hex> name is gone
    assert store.create_bytes("rating/ab/decision.csv", b"other") is False
    assert (tmp_path / "rating/ab/decision.csv").read_bytes() == f"writer {winners[0]}\n".encode()


def test_create_bytes_on_s3_is_a_conditional_put(s3_endpoint):
    bucket = f"create-{secrets.token_hex(4)}"
    store = Store(f"s3://{bucket}/votes")
    store.fs.mkdir(bucket)
    assert store.create_bytes("rating/ab/x.csv", b"first") is True
    assert store.create_bytes("rating/ab/x.csv", b"second") is False
    assert store.read_bytes("rating/ab/x.csv") == b"first"


def _decision(decision_id, gold=None, left="a", answers=None, rater="alice", seconds=2.0, pair_id="p1"):
    return Decision(decision_id=decision_id, rater_id=rater, pair_id=pair_id, pool="main", prompt_id="q1",
                    model_a="source" if gold else "i2v_checkpoint@1111", model_b="degraded" if gold else "i2v_lora@2222",
                    gold_better=gold, left=left, answers=answers or {"visual_quality": "a", "prompt_following": "tie"},
                    seconds=seconds, time="2026-12-01T10:00:00.000+00:00", task_list_version="0123456789abcdef")


def test_a_decision_written_by_many_servers_at_once_is_stored_once_and_gold_is_never_a_vote(tmp_path):
    votes, state = Store(str(tmp_path / "votes")), Store(str(tmp_path / "rating"))
    decision = _decision("ab" * 16)
    barrier, results = threading.Barrier(8), []

    def write():
        barrier.wait()
        results.append(write_decision(decision, votes, state)[0])

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    [uri] = list_vote_files(votes)
    assert uri == votes.uri(vote_file_path("ab" * 16))
    valid, rejected = parse_vote_file(uri, votes.read_bytes(uri), MODELS, source="rating/ab/" + "ab" * 16 + ".csv")
    assert rejected == []
    assert [(v["vote_id"], v["axis"], v["winner"], v["rater_kind"], v["model_a_id"]) for v in valid] == [
        ("ab" * 16 + ".visual_quality", "visual_quality", "a", "human", "i2v_checkpoint@1111"),
        ("ab" * 16 + ".prompt_following", "prompt_following", "tie", "human", "i2v_checkpoint@1111")]

    gold = _decision("cd" * 16, gold="b")
    assert write_decision(gold, votes, state)[0] is True
    assert write_decision(gold, votes, state)[0] is False
    assert list_vote_files(votes) == [uri]  # the gold answer is a record only
    assert state.exists(decision_path("cd" * 16))
    assert {d.decision_id: d.is_gold for d in read_decisions(state)} == {"ab" * 16: False, "cd" * 16: True}
    with pytest.raises(RaterError, match="judge:"):
        write_decision(_decision("ef" * 16, rater="judge:gpt"), votes, state)


def test_rater_ids_are_checked_and_issued_once(tmp_path):
    raters = Raters(Store(str(tmp_path)), refresh_s=0)
    alice = raters.add("alice")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", alice.token)
    with pytest.raises(RaterError, match="already exists"):
        raters.add("alice")
    with pytest.raises(RaterError, match="starts with 'judge:', which marks automatic judges"):
        raters.add("judge:clip")
    for bad in ("", "a b", "../x", "-x", "x" * 65):
        with pytest.raises(RaterError, match="must be 1-64 letters"):
            raters.add(bad)
    assert raters.by_token(alice.token) == alice and raters.by_token("x" * 32) is None
    raters.remove("alice")
    assert raters.by_token(alice.token) is None


def test_admin_statistics_from_decisions():
    decisions = [
        _decision("01" * 16, gold="a", left="a", answers={"visual_quality": "a", "prompt_following": "a"}, seconds=1),
        _decision("02" * 16, gold="a", left="b", answers={"visual_quality": "tie", "prompt_following": "b"}, seconds=3),
        _decision("03" * 16, left="b", answers={"visual_quality": "b", "prompt_following": "a"}, seconds=5),
        _decision("04" * 16, rater="bob", left="a", answers={"visual_quality": "b"}, seconds=None),
    ]
    alice, bob = rater_stats(decisions)
    assert (alice["decisions"], alice["gold"], alice["gold_agree"], alice["gold_agreement"]) == (3, 2, 1, 0.5)
    # chosen sides: a|left, a|left, (tie), b|left, b|left, a|right -> 4 of 5 on the left
    assert (alice["left_rate"], alice["tie_rate"], alice["median_s"]) == (0.8, 1 / 6, 3)
    assert (bob["left_rate"], bob["median_s"], bob["gold_agreement"]) == (0.0, None, None)
    rows = {r["model"]: r for r in model_stats(decisions)}
    assert set(rows) == {"i2v_checkpoint@1111", "i2v_lora@2222"}  # gold "models" are not models
    assert (rows["i2v_lora@2222"]["decisions"], rows["i2v_lora@2222"]["visual_quality_wins"],
            rows["i2v_lora@2222"]["prompt_following_losses"]) == (2, 2, 1)


# --- the server ---

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("rating_server")
    media = root / "media"
    pairs = [pair("main-1", media), pair("main-2", media, models=("i2v_lora@2222", "i2v_lora@3333"), prompt=None,
                                        conditioning=True),
             pair("gold-1", media, models=("source", "degraded"), gold="a"),
             pair("abl-1", media, pool="ablation:motion")]
    tasks = write_tasks(root / "tasks.json", pairs)
    env = server_env(root)
    raters = Raters(Store(env["SVD_DAG_RATING_URI"]))
    tokens = {name: raters.add(name).token for name in ("alice", "bob", "carol", "erin", "frank")}
    with RatingServer(str(tasks), env=env, log=root / "server.log") as server:
        yield {"server": server, "root": root, "env": env, "pairs": {p["pair_id"]: p for p in pairs},
               "tokens": tokens, "tasks": tasks}


def _base(served, rater):
    return served["server"].rater_url(served["tokens"][rater])


def _left_side(served, shown: dict) -> str:
    """Which task side the server put on the left, from the media ids it gave the page."""
    p = served["pairs"][shown["pair_id"]]
    left_id = shown["left"].rsplit("/", 1)[1]
    sides = {media_id(p[s]["video"]): s for s in "ab"}
    assert shown["right"].rsplit("/", 1)[1] in sides and sides[left_id] != sides[shown["right"].rsplit("/", 1)[1]]
    return sides[left_id]


def test_an_unknown_rater_link_is_refused_on_every_route(served):
    known = _base(served, "alice")
    status, _ = get_json(known + "/next")
    assert status == 200
    bogus = served["server"].rater_url("Z" * 32)
    status, _, body = http("GET", bogus)
    assert status == 403 and b"Unknown rater link" in body
    assert get_json(bogus + "/next") == (403, {"detail": "unknown rater link: ask your admin for yours"})
    vote = {"pair_id": "main-1", "decision_id": "0" * 32, "answers": {"visual_quality": "tie"}}
    assert post_json(bogus + "/vote", vote)[0] == 403
    some_video = media_id(served["pairs"]["main-1"]["a"]["video"])
    assert http("GET", f"{bogus}/media/{some_video}")[0] == 403
    assert http("GET", f"{known}/media/{some_video}")[0] == 200
    assert not (served["root"] / "rating" / "decisions").exists()


def test_only_files_the_task_list_names_are_served_with_range_support(served):
    base = _base(served, "alice")
    path = Path(served["pairs"]["main-1"]["b"]["video"])
    data = path.read_bytes()
    url = f"{base}/media/{media_id(str(path))}"
    for outside in (media_id("/etc/passwd"), media_id(str(served["tasks"])), "..%2F..%2Fetc%2Fpasswd",
                    "%2Fetc%2Fpasswd", path.name):
        assert http("GET", f"{base}/media/{outside}")[0] == 404, outside
    status, headers, body = http("GET", url)
    assert (status, body, headers["content-type"], headers["accept-ranges"]) == (200, data, "video/mp4", "bytes")
    status, headers, body = http("GET", url, headers={"Range": "bytes=100-199"})
    assert (status, body, headers["content-range"]) == (206, data[100:200], f"bytes 100-199/{len(data)}")
    status, headers, body = http("GET", url, headers={"Range": "bytes=-64"})  # where the moov atom is
    assert (status, body, headers["content-range"]) == (206, data[-64:], f"bytes {len(data) - 64}-{len(data) - 1}/{len(data)}")
    status, _, body = http("GET", url, headers={"Range": "bytes=1000-"})
    assert (status, body) == (206, data[1000:])
    status, headers, _ = http("GET", url, headers={"Range": f"bytes={len(data)}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")
    status, headers, body = http("HEAD", url, headers={"Range": "bytes=0-9"})
    assert (status, headers["content-length"], body) == (206, "10", b"")
    frame = Path(served["pairs"]["main-2"]["conditioning"])
    status, headers, body = http("GET", f"{base}/media/{media_id(str(frame))}")
    assert (status, headers["content-type"], body) == (200, "image/png", frame.read_bytes())


def test_every_pair_voted_once_lands_in_task_terms_and_retries_are_refused(served):
    base, votes = _base(served, "alice"), Store(served["env"]["SVD_DAG_VOTES_URI"])
    seen, reveals = {}, {}
    for n in range(len(served["pairs"])):
        status, body = get_json(base + "/next")
        assert status == 200 and body["progress"] == {"done": n, "total": 4} and not body["done"]
        shown = body["pair"]
        assert "model" not in json.dumps(shown) and not any(m in json.dumps(shown) for m in MODELS)
        left = _left_side(served, shown)
        decision_id = secrets.token_hex(16)
        vote = {"pair_id": shown["pair_id"], "decision_id": decision_id, "seconds": 1.25,
                "answers": {"visual_quality": "left", "prompt_following": "right"}}
        status, answer = post_json(base + "/vote", vote)
        p = served["pairs"][shown["pair_id"]]
        right = "b" if left == "a" else "a"
        assert (status, answer["status"], answer["progress"]["done"]) == (200, "stored", n + 1)
        assert answer["reveal"] == {"left": p[left]["model"], "right": p[right]["model"]}
        seen[shown["pair_id"]] = (decision_id, left, vote)
        reveals[shown["pair_id"]] = answer["reveal"]
    assert set(seen) == set(served["pairs"])
    assert get_json(base + "/next")[1] == {"done": True, "waiting": False, "follows_latest": False,
                                           "progress": {"done": 4, "total": 4}, "pair": None}

    mine = {}
    for uri in list_vote_files(votes):
        valid, rejected = parse_vote_file(uri, votes.read_bytes(uri), MODELS, source=os.path.relpath(uri, votes.root))
        assert rejected == []
        mine.update({v["vote_id"]: v for v in valid if v["rater_id"] == "alice"})
    want = {}
    for pair_id, (decision_id, left, _) in seen.items():
        if served["pairs"][pair_id]["gold"]:
            continue
        want[f"{decision_id}.visual_quality"] = (pair_id, left)
        want[f"{decision_id}.prompt_following"] = (pair_id, "b" if left == "a" else "a")
    assert set(mine) == set(want)  # the gold pair's answers are not votes
    for vote_id, (pair_id, winner) in want.items():
        v, p = mine[vote_id], served["pairs"][pair_id]
        assert (v["winner"], v["model_a"], v["model_b"], v["prompt_id"], v["pool"], v["rater_kind"]) == (
            winner, p["a"]["model"], p["b"]["model"], p["prompt_id"], p["pool"], "human")

    records = {d.decision_id: d for d in read_decisions(Store(served["env"]["SVD_DAG_RATING_URI"]))}
    gold_id, gold_left, _ = seen["gold-1"]
    gold = records[gold_id]
    assert (gold.is_gold, gold.left, gold.vote_file, gold.seconds, gold.rater_id) == (True, gold_left, None, 1.25, "alice")
    assert gold.answers == {"visual_quality": gold_left, "prompt_following": "b" if gold_left == "a" else "a"}

    decision_id, _, vote = seen["main-1"]
    vote_file = votes.uri(vote_file_path(decision_id))
    before = votes.read_bytes(vote_file)
    status, answer = post_json(base + "/vote", vote)  # the browser resending an unanswered vote
    assert (status, answer["status"], answer["reveal"]) == (409, "duplicate", reveals["main-1"])
    changed = {**vote, "answers": {"visual_quality": "tie"}}
    assert post_json(base + "/vote", changed)[1]["status"] == "duplicate"
    assert votes.read_bytes(vote_file) == before
    again = {**vote, "decision_id": secrets.token_hex(16)}  # a second tab on the same pair
    status, answer = post_json(base + "/vote", again)
    assert (status, answer["status"]) == (409, "already_decided")
    assert not votes.exists(vote_file_path(again["decision_id"]))
    reused = {**seen["main-2"][2], "pair_id": "abl-1", "decision_id": decision_id}  # an id of another pair
    status, answer = post_json(base + "/vote", reused)
    assert (status, answer["status"], "reveal" in answer) == (409, "conflict", False)


def test_malformed_votes_are_refused_and_write_nothing(served):
    base = _base(served, "bob")
    good = {"pair_id": "main-1", "decision_id": secrets.token_hex(16), "answers": {"visual_quality": "left"}}
    assert post_json(base + "/vote", {**good, "pair_id": "nope"}) == (
        404, {"detail": "pair 'nope' is not in task list 0123456789abcdef"})
    for bad in ({"decision_id": "../../x"}, {"decision_id": "AB" * 16}, {"answers": {}},
                {"answers": {"visual_quality": "a"}}, {"answers": {"looks": "left"}}, {"seconds": -1}):
        status, body = post_json(base + "/vote", {**good, **bad})
        assert status == 422, (bad, status, body)
    assert get_json(base + "/next")[1]["progress"]["done"] == 0
    assert not [d for d in read_decisions(Store(served["env"]["SVD_DAG_RATING_URI"])) if d.rater_id == "bob"]


def test_the_admin_page_shows_agreement_with_gold_and_exports_every_answer(served):
    base, server = _base(served, "carol"), served["server"]
    lefts = {}
    for _ in served["pairs"]:
        shown = get_json(base + "/next")[1]["pair"]
        lefts[shown["pair_id"]] = _left_side(served, shown)
        vote = {"pair_id": shown["pair_id"], "decision_id": secrets.token_hex(16), "seconds": 2.0,
                "answers": {"visual_quality": "left", "prompt_following": "tie"}}
        assert post_json(base + "/vote", vote)[0] == 200
    assert http("GET", f"{server.url}/admin/{'x' * 32}")[0] == 403
    assert http("GET", f"{server.url}/admin/{'x' * 32}/export.csv")[0] == 403
    status, _, page = http("GET", server.admin_url)
    assert status == 200
    row = re.search(r'<tr data-rater="carol">(.*?)</tr>', page.decode(), re.S).group(1)
    cells = [c.strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    agree = int(lefts["gold-1"] == "a")  # carol chose the left video; gold says a is better
    assert cells[:7] == ["carol", "4", f"{agree} / 1", f"{100 * agree}%", "100%", "50%", "2.0"]
    assert "i2v_lora@3333" in page.decode() and ">degraded<" not in page.decode()

    status, headers, body = http("GET", server.admin_url + "/export.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = [r for r in csv.DictReader(io.StringIO(body.decode())) if r["rater_id"] == "carol"]
    assert len(rows) == 8
    for r in rows:
        assert r["shown_left"] == lefts[r["pair_id"]]
        assert r["winner"] == (lefts[r["pair_id"]] if r["axis"] == "visual_quality" else "tie")
        assert (r["vote_id"] == "") == (r["pair_id"] == "gold-1")
        assert r["vote_id"] in ("", f"{r['decision_id']}.{r['axis']}")


def _cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "svd_dag.cli", "rating", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_raters_added_and_withdrawn_while_the_server_runs(served):
    env, server = served["env"], served["server"]
    added = _cli({**env, "SVD_DAG_RATING_URL": server.url}, "add-rater", "dave")
    assert added.returncode == 0, added.stderr
    link = added.stdout.strip()
    assert re.fullmatch(re.escape(server.url) + r"/r/[A-Za-z0-9_-]{32}", link)
    _until(lambda: get_json(link + "/next")[0] == 200)
    assert _cli(env, "add-rater", "dave").returncode != 0
    refused = _cli(env, "add-rater", "judge:human")
    assert refused.returncode != 0 and "marks automatic judges" in refused.stderr
    listed = _cli(env, "raters", "--url", server.url)
    assert f"dave\t{link}\n" in listed.stdout
    assert _cli(env, "remove-rater", "dave").returncode == 0
    _until(lambda: get_json(link + "/next")[0] == 403)


def test_a_second_server_on_the_same_folders_refuses_the_first_ones_votes(served):
    base = _base(served, "erin")
    shown = get_json(base + "/next")[1]["pair"]
    vote = {"pair_id": shown["pair_id"], "decision_id": secrets.token_hex(16), "answers": {"visual_quality": "tie"}}
    # started before erin's vote: its memory does not know it, the files decide
    with RatingServer(str(served["tasks"]), env=served["env"], log=served["root"] / "second.log") as second:
        assert post_json(base + "/vote", vote)[0] == 200
        other = second.rater_url(served["tokens"]["erin"])
        status, answer = post_json(other + "/vote", vote)
        assert (status, answer["status"]) == (409, "duplicate")
    with RatingServer(str(served["tasks"]), env=served["env"], log=served["root"] / "third.log") as third:
        other = third.rater_url(served["tokens"]["erin"])
        assert get_json(other + "/next")[1]["progress"]["done"] == 1  # rebuilt from the decision records
        assert post_json(other + "/vote", {**vote, "decision_id": secrets.token_hex(16)})[1]["status"] == "already_decided"


def test_the_console_commands_never_open_the_catalog_nor_import_torch(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.json", [pair("p1", tmp_path / "media")])
    env = server_env(tmp_path)
    code = ("import io, json, sys, contextlib\nfrom svd_dag.cli import main\nout = io.StringIO()\n"
            "for args in (['rating', 'add-rater', 'zoe'], ['rating', 'export']):\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n            main(args)\n        except SystemExit as e:\n            assert not e.code, e.code\n"
            "print(json.dumps({'out': out.getvalue(), 'mods': sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'duckdb', 'dagster', 'mlflow') or m == 'svd_dag.catalog')}))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mods"] == []
    assert result["out"].startswith("http://127.0.0.1:8765/r/") and "vote_id,decision_id,rater_id" in result["out"]
    assert not any(p.name.startswith("catalog") for p in (tmp_path / "home").glob("*"))

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(tasks.read_text()), "version": "nope"}))
    proc = _cli(env, "serve", "--tasks", str(bad), "--port", "1", timeout=60)
    assert proc.returncode != 0
    assert f"svd-dag rating serve: {bad}: invalid task list (1 problem(s)):" in proc.stderr
    assert "version 'nope' is not 16 lowercase hex digits" in proc.stderr


def test_everything_on_s3_task_list_videos_votes_and_decisions(s3_endpoint, tmp_path):
    bucket = f"rating-{secrets.token_hex(4)}"
    store = Store(f"s3://{bucket}")
    store.fs.mkdir(bucket)
    clip = video(8)
    for name in ("a.mp4", "b.mp4"):
        store.write_bytes(f"samples/{name}", clip)
    doc = _doc(_raw_pair("p1", a={"model": "i2v_checkpoint@1111", "video": f"s3://{bucket}/samples/a.mp4"},
                         b={"model": "i2v_lora@2222", "video": f"s3://{bucket}/samples/b.mp4"}))
    store.write_bytes("tasks/tasks.json", doc)
    env = server_env(tmp_path, SVD_DAG_VOTES_URI=f"s3://{bucket}/votes", SVD_DAG_RATING_URI=f"s3://{bucket}/rating",
                     SVD_DAG_S3_ENDPOINT_URL=s3_endpoint)
    token = Raters(Store(env["SVD_DAG_RATING_URI"])).add("sam").token
    with RatingServer(f"s3://{bucket}/tasks/tasks.json", env=env, log=tmp_path / "server.log") as server:
        base = server.rater_url(token)
        shown = get_json(base + "/next")[1]["pair"]
        status, _, body = http("GET", server.url + shown["left"], headers={"Range": "bytes=-100"})
        assert (status, body) == (206, clip[-100:])
        vote = {"pair_id": "p1", "decision_id": secrets.token_hex(16), "answers": {a: "tie" for a in AXES}}
        assert post_json(base + "/vote", vote)[0] == 200
        assert post_json(base + "/vote", vote)[0] == 409
    votes = Store(env["SVD_DAG_VOTES_URI"])
    [uri] = list_vote_files(votes)
    valid, rejected = parse_vote_file(uri, votes.read_bytes(uri), MODELS)
    assert rejected == [] and sorted(v["vote_id"] for v in valid) == sorted(f"{vote['decision_id']}.{a}" for a in AXES)
    assert [d.rater_id for d in read_decisions(Store(env["SVD_DAG_RATING_URI"]))] == ["sam"]
