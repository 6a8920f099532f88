"""A running rating page picks up the newest task list `rating_tasks` wrote, without a restart:
the switch happens on the first request after the check interval, a broken new list is skipped
with a warning, pairs and media of the lists served before stay answerable (a rater shown a
pair just before the switch can still vote on it), and a pair in both lists is decided once.
Tested on `TaskSource` with a controlled clock, and on a real `svd-dag rating serve` over HTTP."""

from __future__ import annotations

import json
import logging
import secrets
import time

from rating_fixtures import get_json, http, pair, post_json, server_env, write_tasks
from svd_dag.evaluation.rating_tasks import LATEST_POINTER
from svd_dag.rating.follow import TaskSource
from svd_dag.rating.raters import Raters
from svd_dag.rating.records import read_decisions
from svd_dag.rating.server import RatingServer
from svd_dag.rating.tasks import load_task_list, media_id
from svd_dag.storage import Store

V1, V2, V3 = "1111111111111111", "2222222222222222", "3333333333333333"


def _point_at(storage, tasks_path) -> None:
    """What rating_tasks does last: the storage root's latest pointer names the new list."""
    store = Store(str(storage))
    store.write_bytes(LATEST_POINTER, json.dumps({"version": "x", "tasks_uri": str(tasks_path)}).encode())


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_source_switches_after_the_interval_keeps_the_old_lists_and_skips_a_broken_one(tmp_path, caplog):
    media = tmp_path / "media"
    first = write_tasks(tmp_path / "v1.json", [pair("p1", media), pair("p2", media)], version=V1)
    second = write_tasks(tmp_path / "v2.json", [pair("p2", media), pair("p3", media)], version=V2)
    broken = tmp_path / "v3.json"
    broken.write_text('{"version": "3333333333333333", "pairs": [{"pair_id": "p4"}]}')
    pointer = {"uri": str(first), "error": None}

    def resolve():
        if pointer["error"]:
            raise pointer["error"]
        return pointer["uri"]

    clock = Clock()
    source = TaskSource(load_task_list(str(first)), resolve=resolve, load=load_task_list, check_every_s=30,
                        clock=clock)
    assert source.follows and source.current.version == V1

    pointer["uri"] = str(second)
    clock.now = 29.0
    assert source.current.version == V1  # not yet time to look
    clock.now = 30.0
    assert source.current.version == V2 and [p.pair_id for p in source.current.pairs] == ["p2", "p3"]
    found, where = source.pair("p1")  # gone from the new list, still answerable from the old one
    assert found.pair_id == "p1" and where.version == V1
    assert source.pair("p2")[1].version == V2 and source.pair("nope") == (None, None)
    assert source.media_uri(media_id(str(media / "p1-a.mp4"))) == str(media / "p1-a.mp4")

    pointer["uri"] = str(broken)
    clock.now = 60.0
    with caplog.at_level(logging.WARNING, logger="svd_dag.rating.follow"):
        assert source.current.version == V2
    assert f"new task list {broken} not served" in caplog.text and "p4" in caplog.text

    caplog.clear()
    pointer["error"], clock.now = ConnectionError("storage unreachable"), 90.0  # an OSError, as s3fs raises
    with caplog.at_level(logging.WARNING, logger="svd_dag.rating.follow"):
        assert source.current.version == V2
    assert "could not read the newest task list's pointer" in caplog.text

    fixed = TaskSource(load_task_list(str(first)))
    clock.now = 1e9
    assert not fixed.follows and fixed.current.version == V1


def test_a_running_page_serves_the_newest_task_list_and_old_pairs_still_take_votes(tmp_path):
    media, storage = tmp_path / "media", tmp_path / "storage"
    first = write_tasks(tmp_path / "v1.json", [pair("p1", media), pair("p2", media)], version=V1)
    second = write_tasks(tmp_path / "v2.json", [pair("p1", media), pair("p3", media)], version=V2)
    _point_at(storage, first)
    env = server_env(tmp_path, SVD_DAG_STORAGE_URI=str(storage))
    token = Raters(Store(env["SVD_DAG_RATING_URI"])).add("alice").token
    p2_video = f"/media/{media_id(str(media / 'p2-a.mp4'))}"
    with RatingServer(None, env=env, log=tmp_path / "server.log", check_every_s=0.2) as server:
        base = server.rater_url(token)
        status, health = get_json(f"{server.url}/healthz")
        assert (status, health["task_list"], health["follows_latest"]) == (200, V1, True)
        assert get_json(base + "/next")[1]["progress"] == {"done": 0, "total": 2}
        decided_p1 = {"pair_id": "p1", "decision_id": secrets.token_hex(16), "answers": {"visual_quality": "left"}}
        assert post_json(base + "/vote", decided_p1)[0] == 200
        assert http("GET", base + p2_video)[0] == 200  # p2 is open on alice's screen when the list changes

        _point_at(storage, second)
        deadline = time.monotonic() + 20
        while get_json(f"{server.url}/healthz")[1]["task_list"] != V2:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.1)
        # p1 is in both lists: decided once, it counts for v2, and p3 comes next
        body = get_json(base + "/next")[1]
        assert body["progress"] == {"done": 1, "total": 2} and body["pair"]["pair_id"] == "p3"
        again = post_json(base + "/vote", {**decided_p1, "decision_id": secrets.token_hex(16)})
        assert again[1]["status"] == "already_decided"
        # p2, shown before the switch: its video still plays and its vote is stored, under v1
        assert http("GET", base + p2_video)[0] == 200
        late = {"pair_id": "p2", "decision_id": secrets.token_hex(16), "answers": {"visual_quality": "tie"}}
        assert post_json(base + "/vote", late)[0] == 200
        assert post_json(base + "/vote", {**late, "pair_id": "p9", "decision_id": secrets.token_hex(16)})[0] == 404
    versions = {d.pair_id: d.task_list_version for d in read_decisions(Store(env["SVD_DAG_RATING_URI"]))}
    assert versions == {"p1": V1, "p2": V1}
    assert f"now serving task list {second}" in (tmp_path / "server.log").read_text()


def test_a_fixed_task_list_is_never_replaced(tmp_path):
    media, storage = tmp_path / "media", tmp_path / "storage"
    first = write_tasks(tmp_path / "v1.json", [pair("p1", media)], version=V1)
    second = write_tasks(tmp_path / "v2.json", [pair("p3", media)], version=V2)
    _point_at(storage, second)
    env = server_env(tmp_path, SVD_DAG_STORAGE_URI=str(storage))
    with RatingServer(str(first), env=env, check_every_s=0.1) as server:
        time.sleep(0.5)
        health = get_json(f"{server.url}/healthz")[1]
        assert (health["task_list"], health["follows_latest"]) == (V1, False)


def test_a_page_started_before_any_task_list_serves_no_pairs_then_the_first_list(tmp_path):
    media, storage = tmp_path / "media", tmp_path / "storage"
    env = server_env(tmp_path, SVD_DAG_STORAGE_URI=str(storage))
    token = Raters(Store(env["SVD_DAG_RATING_URI"])).add("alice").token
    with RatingServer(None, env=env, log=tmp_path / "server.log", check_every_s=0.2) as server:
        health = get_json(f"{server.url}/healthz")[1]
        assert (health["task_list"], health["pairs"], health["follows_latest"]) == (None, 0, True)
        body = get_json(server.rater_url(token) + "/next")[1]
        assert (body["done"], body["waiting"], body["progress"]) == (True, True, {"done": 0, "total": 0})
        vote = {"pair_id": "p1", "decision_id": secrets.token_hex(16), "answers": {"visual_quality": "left"}}
        assert post_json(server.rater_url(token) + "/vote", vote)[0] == 404
        assert http("GET", server.admin_url)[0] == 200

        _point_at(storage, write_tasks(tmp_path / "v1.json", [pair("p1", media)], version=V1))
        deadline = time.monotonic() + 20
        while get_json(f"{server.url}/healthz")[1]["task_list"] != V1:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.1)
        body = get_json(server.rater_url(token) + "/next")[1]
        assert (body["done"], body["waiting"], body["pair"]["pair_id"]) == (False, False, "p1")
        assert post_json(server.rater_url(token) + "/vote", vote)[0] == 200
    assert "does not exist yet: serving no pairs" in (tmp_path / "server.log").read_text()
