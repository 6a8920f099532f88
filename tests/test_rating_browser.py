"""The rating page in a real browser (headless Debian Chromium through Playwright, as
tests/ui_servers.py starts it) against a real `svd-dag rating serve` on 127.0.0.1.

Chromium plays the project's own H.264 mp4s (encode_mp4: moov atom at the end) to their
`ended` event: a rater plays both videos, answers with the keyboard, the vote file appears
with the answers in the task's a/b terms and the models are named only then; the answer
buttons stay disabled (clicks and keys do nothing) until both videos have played through;
an unknown rater link is refused; a file the task list does not name is a 404. Every request
that leaves loopback is aborted."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

import ui_servers
from rating_fixtures import pair, server_env, write_tasks
from svd_dag.evaluation.rating_tasks import LATEST_POINTER
from svd_dag.evaluation.votes import list_vote_files, parse_vote_file
from svd_dag.rating.raters import Raters
from svd_dag.rating.records import read_decisions
from svd_dag.rating.server import RatingServer
from svd_dag.rating.tasks import media_id
from svd_dag.storage import Store

expect.set_options(timeout=30_000)
MODELS = {"i2v_checkpoint@1111", "i2v_lora@2222"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    ui_servers.require_browser()
    root = tmp_path_factory.mktemp("rating_browser")
    media = root / "media"
    # a and b differ in length (0.6 s, 1.2 s), so "one video ended" and "both ended" are apart
    pairs = [pair("kite", media, frames=(6, 12)), pair("dune", media, frames=(6, 12), prompt=None, conditioning=True)]
    tasks = write_tasks(root / "tasks.json", pairs)
    env = server_env(root)
    raters = Raters(Store(env["SVD_DAG_RATING_URI"]))
    tokens = {name: raters.add(name).token for name in ("alice", "bob")}
    shots = root / "screenshots"
    shots.mkdir()
    with RatingServer(str(tasks), env=env, log=root / "server.log") as server:
        yield {"server": server, "tokens": tokens, "pairs": {p["pair_id"]: p for p in pairs}, "env": env,
               "shots": shots}


@pytest.fixture(scope="module")
def browser(site):
    with ui_servers.open_browser() as context:
        yield context


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    page.close()


def explained(test):
    """A failing test's error gets a screenshot of the page, its status line and the server log."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        page, site = kwargs["page"], kwargs["site"]
        try:
            return test(*args, **kwargs)
        except Exception as exc:
            shot = site["shots"] / f"{test.__name__}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                status = page.locator("#status").text_content(timeout=2000)
            except Exception as shot_exc:  # the browser itself may be what broke
                shot, status = f"no screenshot ({shot_exc})", "?"
            raise AssertionError(f"{exc}\nscreenshot: {shot}\npage status: {status!r}; page errors: {page.errors}\n"
                                 f"--- server log ---\n{site['server'].tail()}") from exc
    return run


def answer_buttons(page):
    return page.locator("button[data-answer]")


def shown_pair(page, site) -> tuple[dict, str]:
    """The pair on the page and the task side ("a"/"b") shown on the left, from the video's URL;
    checks that the prompt or the conditioning frame is shown as the task list has it."""
    left = page.locator("#video-left").get_attribute("src").rsplit("/", 1)[1]
    found = [(p, side) for p in site["pairs"].values() for side in "ab" if media_id(p[side]["video"]) == left]
    assert len(found) == 1, f"the left video {left} is no video of the task list"
    p, side = found[0]
    expect(page.locator("#prompt")).to_have_text(p["prompt"] or "")
    if p["conditioning"]:
        expect(page.locator("#conditioning")).to_be_visible()
        page.wait_for_function("() => document.getElementById('conditioning').naturalWidth === 64")
    else:
        expect(page.locator("#conditioning")).to_be_hidden()
    return p, side


@explained
def test_a_rater_plays_both_videos_votes_with_keys_and_the_vote_file_appears(page, site):
    media_statuses = []
    page.on("response", lambda r: media_statuses.append(r.status) if "/media/" in r.url else None)
    page.goto(site["server"].rater_url(site["tokens"]["alice"]))
    root = page.locator("#rating")
    expect(root).to_have_attribute("data-state", "watching")
    expect(page.locator("#progress")).to_have_text("0 / 2")
    p, left = shown_pair(page, site)
    right = "b" if left == "a" else "a"
    expect(page.locator("#model-left")).to_have_text("")

    page.keyboard.press(" ")  # play both
    expect(root).to_have_attribute("data-state", "answering")  # both `ended` events fired
    assert page.evaluate("() => [...document.querySelectorAll('video')].every(v => v.ended && v.duration > 0.5)")
    page.keyboard.press("3")  # visual quality: B (the right video)
    page.keyboard.press("7")  # prompt following: A (the left video)
    expect(page.locator("button[data-axis=visual_quality][data-answer=right]")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#submit")).to_be_enabled()
    page.keyboard.press("Enter")
    expect(root).to_have_attribute("data-state", "revealed")
    expect(page.locator("#model-left")).to_have_text(p[left]["model"])
    expect(page.locator("#model-right")).to_have_text(p[right]["model"])
    expect(page.locator("#progress")).to_have_text("1 / 2")

    votes = Store(site["env"]["SVD_DAG_VOTES_URI"])
    [uri] = list_vote_files(votes)
    valid, rejected = parse_vote_file(uri, votes.read_bytes(uri), MODELS)
    assert rejected == []
    got = {v["axis"]: (v["winner"], v["model_a"], v["model_b"], v["prompt_id"], v["rater_id"]) for v in valid}
    assert got == {"visual_quality": (right, p["a"]["model"], p["b"]["model"], p["prompt_id"], "alice"),
                   "prompt_following": (left, p["a"]["model"], p["b"]["model"], p["prompt_id"], "alice")}
    [record] = [d for d in read_decisions(Store(site["env"]["SVD_DAG_RATING_URI"])) if d.rater_id == "alice"]
    assert (record.left, record.pair_id) == (left, p["pair_id"])
    assert record.seconds is not None and 0 <= record.seconds < 30  # from both videos ended to the vote
    assert 206 in media_statuses, media_statuses  # Chromium asked by range and got ranges

    page.keyboard.press("Enter")  # the next pair
    expect(root).to_have_attribute("data-state", "watching")
    expect(page.locator("#model-left")).to_have_text("")
    p2, _ = shown_pair(page, site)
    assert p2["pair_id"] != p["pair_id"]
    assert page.errors == []


@explained
def test_the_answer_buttons_stay_disabled_until_both_videos_have_played_through(page, site):
    page.goto(site["server"].rater_url(site["tokens"]["bob"]))
    root = page.locator("#rating")
    expect(root).to_have_attribute("data-state", "watching")
    assert answer_buttons(page).count() == 6
    for i in range(6):
        expect(answer_buttons(page).nth(i)).to_be_disabled()
    page.wait_for_function("() => document.getElementById('video-left').readyState >= 1")
    # only the left video is played to its end
    page.evaluate("""() => new Promise((done) => { const v = document.getElementById('video-left');
        v.addEventListener('ended', () => done(), {once: true}); v.play(); })""")
    page.keyboard.press("1")
    page.keyboard.press("7")
    page.keyboard.press("Enter")
    answer_buttons(page).first.click(force=True)  # a click on a disabled button does nothing either
    page.wait_for_timeout(300)
    assert root.get_attribute("data-state") == "watching"
    for i in range(6):
        expect(answer_buttons(page).nth(i)).to_be_disabled()
        expect(answer_buttons(page).nth(i)).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#submit")).to_be_disabled()
    assert not [d for d in read_decisions(Store(site["env"]["SVD_DAG_RATING_URI"])) if d.rater_id == "bob"]

    page.locator("#play").click()
    expect(root).to_have_attribute("data-state", "answering")
    for i in range(6):
        expect(answer_buttons(page).nth(i)).to_be_enabled()
    expect(page.locator("#submit")).to_be_disabled()  # not before both axes are answered
    page.keyboard.press("2")
    page.keyboard.press("8")
    expect(page.locator("#submit")).to_be_enabled()


@explained
def test_an_unknown_rater_link_is_refused(page, site):
    response = page.goto(site["server"].rater_url("Q" * 32))
    assert response.status == 403
    expect(page.get_by_role("heading", name="Unknown rater link")).to_be_visible()
    assert page.locator("#rating").count() == 0
    api = page.request.get(site["server"].rater_url("Q" * 32) + "/next")
    assert api.status == 403 and json.loads(api.body())["detail"].startswith("unknown rater link")


@explained
def test_a_file_the_task_list_does_not_name_is_not_served(page, site):
    base = site["server"].rater_url(site["tokens"]["alice"])
    video = site["pairs"]["kite"]["a"]["video"]
    assert page.request.get(f"{base}/media/{media_id(video)}").status == 200
    for outside in (media_id("/etc/passwd"), media_id(str(Path(video).with_name("other.mp4"))),
                    "..%2F..%2F..%2Fetc%2Fpasswd", Path(video).name):
        response = page.goto(f"{base}/media/{outside}")
        assert response.status == 404, (outside, response.status)


@explained
def test_a_page_started_before_any_task_list_says_so_and_shows_the_first_list_when_it_appears(page, site, tmp_path):
    storage = tmp_path / "storage"
    env = server_env(tmp_path, SVD_DAG_STORAGE_URI=str(storage))
    token = Raters(Store(env["SVD_DAG_RATING_URI"])).add("carol").token
    with RatingServer(None, env=env, log=tmp_path / "server.log", check_every_s=0.5) as server:
        page.goto(server.rater_url(token))
        root = page.locator("#rating")
        expect(root).to_have_attribute("data-state", "waiting")
        expect(page.locator("#done-title")).to_have_text("No pairs to rate yet.")
        expect(page.locator("#done-more")).to_be_visible()
        expect(page.locator("#progress")).to_have_text("0 / 0")

        tasks = write_tasks(tmp_path / "tasks.json", [pair("kite", tmp_path / "media", frames=(6, 12))])
        Store(str(storage)).write_bytes(LATEST_POINTER,
                                        json.dumps({"version": "v", "tasks_uri": str(tasks)}).encode())
        expect(root).to_have_attribute("data-state", "watching")  # without a reload
        expect(page.locator("#progress")).to_have_text("0 / 1")
        expect(page.locator("#done")).to_be_hidden()
    assert page.errors == []
