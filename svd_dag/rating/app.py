"""The rating page as a FastAPI app: rater pages and their API, media, the admin page.

    GET  /r/<token>                  the rating page (HTML; its script drives the rest)
    GET  /r/<token>/next             the next pair as shown to this rater, and progress (JSON;
                                     "waiting": no task list yet)
    POST /r/<token>/vote             {pair_id, decision_id, answers: {axis: left|right|tie}, seconds}
                                     200 stored / 409 duplicate, already_decided or conflict
    GET  /r/<token>/media/<id>       a video or conditioning frame of the task list (Range)
    GET  /admin/<admin token>        statistics; /admin/<admin token>/export.csv every answer
    GET  /healthz                    {"ok": true, "task_list": version (null: none yet), "pairs": n,
                                      "follows_latest": bool}

Every rater request is checked against the raters folder (403 for an unknown link); a file
is served only by the opaque id the task list gives it (404 for anything else), so nothing
a request holds is used as a path. A vote's answers come in displayed terms (left/right) and
are stored in the task's a/b terms; the models are named to the rater only in the vote's
answer. Both a stored vote and a refused retry answer with the models and the progress, so
a browser that resends a vote it got no answer for carries on as if the first had answered.
The task list may change while the app runs (`follow.TaskSource`): votes and media of the
lists served just before still answer.
"""

from __future__ import annotations

import hmac
import logging
from importlib import resources
from typing import Literal

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from svd_dag.rating import stats
from svd_dag.rating.follow import TaskSource
from svd_dag.rating.media import MediaFiles, media_response
from svd_dag.rating.raters import Rater, Raters
from svd_dag.rating.state import RatingState
from svd_dag.rating.tasks import Pair, TaskList, media_id, media_type
from svd_dag.storage import Store

log = logging.getLogger(__name__)
# Keys per axis and answer, shown on the page and read by its script (data-key).
SHORTCUTS = {"visual_quality": {"left": "1", "tie": "2", "right": "3"},
             "prompt_following": {"left": "7", "tie": "8", "right": "9"}}
AXIS_TITLES = {"visual_quality": "Visual quality", "prompt_following": "Prompt following"}
STATIC = {"rate.js": "application/javascript", "rating.css": "text/css"}
# The token travels in the page's URL: never send it on as a Referer; nothing loads from elsewhere.
SECURITY_HEADERS = [(b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff"),
                    (b"content-security-policy", b"default-src 'self'; object-src 'none'; frame-ancestors 'none'")]


class VoteIn(BaseModel):
    """A vote as the page sends it: answers as the rater saw the videos (left/right/tie)."""
    pair_id: str = Field(min_length=1, max_length=512)
    decision_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    answers: dict[Literal["visual_quality", "prompt_following"], Literal["left", "right", "tie"]] = \
        Field(min_length=1)
    seconds: float | None = Field(default=None, ge=0, le=7 * 86400)


class SecurityHeaders:
    """Pure ASGI middleware adding SECURITY_HEADERS to every response (no per-request task)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def add_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, add_headers)


def create_app(tasks: TaskList | TaskSource, votes: Store, state: Store, admin_token: str,
               raters: Raters | None = None) -> FastAPI:
    """The app for a task list (or a `TaskSource` that follows the newest): votes to `votes`
    (the votes root), decision records and raters in `state` (the rating state folder), the
    admin page behind `admin_token`."""
    if len(admin_token) < 16:
        raise ValueError("the admin token must be at least 16 characters (SVD_DAG_RATING_ADMIN_TOKEN)")
    rating = RatingState(tasks, votes, state)
    source = rating.source
    raters = raters or Raters(state)
    files = MediaFiles()
    templates = jinja2.Environment(loader=jinja2.PackageLoader("svd_dag.rating", "templates"),
                                   autoescape=jinja2.select_autoescape(("html",)), undefined=jinja2.StrictUndefined)
    static = {name: resources.files("svd_dag.rating").joinpath("static", name).read_bytes() for name in STATIC}
    app = FastAPI(title="svd-dag rating", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.rating = rating

    def rater_of(token: str) -> Rater:
        rater = raters.by_token(token)
        if rater is None:
            raise HTTPException(403, "unknown rater link: ask your admin for yours")
        return rater

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context), status_code=status,
                            headers={"Cache-Control": "no-store"})

    def shown(rater: Rater, pair: Pair) -> dict:
        left = rating.left_side(rater.rater_id, pair.pair_id)
        right = "b" if left == "a" else "a"
        url = f"/r/{rater.token}/media/"
        return {"pair_id": pair.pair_id, "prompt": pair.prompt,
                "conditioning": url + media_id(pair.conditioning) if pair.conditioning else None,
                "left": url + media_id(pair.side(left).video), "right": url + media_id(pair.side(right).video)}

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page("index.html")

    @app.get("/healthz")
    def healthz():
        tasks = source.current
        return {"ok": True, "task_list": tasks.version or None, "pairs": len(tasks.pairs),
                "follows_latest": source.follows}

    @app.get("/static/{name}")
    def static_file(name: str):
        if name not in static:
            raise HTTPException(404, "no such file")
        return Response(static[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/r/{token}", response_class=HTMLResponse)
    def rate_page(token: str):
        rater = raters.by_token(token)
        if rater is None:
            return page("refused.html", status=403)
        return page("rate.html", rater_id=rater.rater_id, base=f"/r/{token}", shortcuts=SHORTCUTS,
                    axis_titles=AXIS_TITLES, progress=rating.progress(rater.rater_id),
                    look_again_ms=int(max(1.0, source.check_every_s) * 1000))

    @app.get("/r/{token}/next")
    def next_pair(token: str):
        rater = rater_of(token)
        pair = rating.next_pair(rater.rater_id)
        body = {"done": pair is None, "waiting": source.current.waiting, "follows_latest": source.follows,
                "progress": rating.progress(rater.rater_id), "pair": shown(rater, pair) if pair else None}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.post("/r/{token}/vote")
    def vote(token: str, body: VoteIn):
        rater = rater_of(token)
        pair, tasks = source.pair(body.pair_id)
        if pair is None:
            raise HTTPException(404, f"pair {body.pair_id!r} is not in task list {source.current.version}")
        outcome = rating.decide(rater.rater_id, pair, body.decision_id, dict(body.answers), body.seconds, tasks)
        answer = {"status": outcome.status, "progress": rating.progress(rater.rater_id)}
        if outcome.status != "conflict":
            answer["reveal"] = rating.reveal(rater.rater_id, pair)
        return JSONResponse(answer, status_code=200 if outcome.status == "stored" else 409,
                            headers={"Cache-Control": "no-store"})

    @app.api_route("/r/{token}/media/{mid}", methods=["GET", "HEAD"])
    def media(token: str, mid: str, request: Request):
        rater_of(token)
        uri = source.media_uri(mid)
        if uri is None:
            raise HTTPException(404, "not a file of this task list")
        try:
            return media_response(files, uri, media_type(uri), request.headers.get("range"),
                                  head=request.method == "HEAD")
        except FileNotFoundError:
            log.warning("task list %s names %s, which does not exist", source.current.uri, uri)
            raise HTTPException(404, "this file of the task list is missing") from None

    def admin_check(token: str) -> None:
        if not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(403, "not the admin token")

    @app.get("/admin/{token}", response_class=HTMLResponse)
    def admin(token: str):
        admin_check(token)
        decisions = rating.decisions()
        tasks = source.current
        return page("admin.html", tasks=tasks, summary=stats.summary(decisions, len(tasks.pairs)),
                    raters=stats.rater_stats(decisions), models=stats.model_stats(decisions),
                    axes=list(AXIS_TITLES.items()), base=f"/admin/{token}")

    @app.get("/admin/{token}/export.csv")
    def export(token: str):
        admin_check(token)
        return PlainTextResponse(stats.export_csv(rating.decisions()), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="rating-decisions.csv"',
                                          "Cache-Control": "no-store"})

    app.add_middleware(SecurityHeaders)
    return app
