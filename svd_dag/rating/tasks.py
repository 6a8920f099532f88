"""The rating task list: which pairs of sample videos raters compare, as `rating_tasks` writes it.

A JSON document at a local path or s3:// URI:

    {"version": "<16 hex>", "created_at": "<ISO UTC>",
     "pairs": [{"pair_id": "<unique>", "pool": "main" | "ablation:<criterion>" | ...,
                "prompt_id": "<str>", "prompt": "<text>" | null, "conditioning": "<png/jpeg uri>" | null,
                "a": {"model": "<asset@data_version>", "video": "<mp4 uri>"},
                "b": {"model": "<asset@data_version>", "video": "<mp4 uri>"},
                "gold": null | {"better": "a" | "b"}}]}

A gold pair (a clearly degraded video against its source) is an attention check: its
"models" need not be checkpoints and its answers never become vote files. Every other pair
names two different models as `asset@data_version` (`asset:variant@data_version` for a
variant), so a vote names the exact checkpoint the rater saw.

`load_task_list` validates everything at once and raises `TaskListError` listing each
problem with the file and the pair. Media URIs (absolute local paths or s3://) become
opaque ids (`media_id`): the page asks for a file by id, and only the files this task list
names have one, so no part of a request is ever used as a path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from svd_dag.evaluation.votes import JUDGE_PREFIX, POOL_PATTERN
from svd_dag.storage import Store

VERSION_PATTERN = re.compile(r"^[0-9a-f]{16}$")
VIDEO_TYPES = {".mp4": "video/mp4"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
SIDES = ("a", "b")


class TaskListError(ValueError):
    """A task list that cannot be used; the message names the file and every problem in it."""


@dataclass(frozen=True)
class Side:
    """One video of a pair: the model that made it and where it is."""
    model: str
    video: str


@dataclass(frozen=True)
class Pair:
    """Two videos for one prompt (or conditioning frame) that a rater compares."""
    pair_id: str
    pool: str
    prompt_id: str
    prompt: str | None
    conditioning: str | None
    a: Side
    b: Side
    gold_better: str | None  # "a" | "b" for a gold pair (an attention check), else None

    @property
    def is_gold(self) -> bool:
        return self.gold_better is not None

    def side(self, name: str) -> Side:
        return self.a if name == "a" else self.b


@dataclass(frozen=True)
class TaskList:
    """A validated task list: its pairs in file order and the media files it names."""
    uri: str
    version: str
    created_at: str
    pairs: tuple[Pair, ...]
    _by_id: dict[str, Pair] = field(init=False, repr=False, compare=False)
    _media: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        media = {media_id(uri): uri for p in self.pairs for uri in (p.a.video, p.b.video, p.conditioning) if uri}
        object.__setattr__(self, "_by_id", {p.pair_id: p for p in self.pairs})  # frozen: set once, here
        object.__setattr__(self, "_media", media)

    @property
    def waiting(self) -> bool:
        """The placeholder a page that follows `rating_tasks` serves until the first list exists."""
        return not self.uri

    def pair(self, pair_id: str) -> Pair | None:
        return self._by_id.get(pair_id)

    def media_uri(self, mid: str) -> str | None:
        """The URI of the file with this media id, or None: not a file of this task list."""
        return self._media.get(mid)


def media_id(uri: str) -> str:
    """The opaque id under which the page serves a file (it hides the path, which may name the model)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:24]


def media_type(uri: str) -> str:
    """The Content-Type the file is served with, from its suffix (validated on load)."""
    suffix = posixpath.splitext(uri.lower())[1]
    return {**VIDEO_TYPES, **IMAGE_TYPES}.get(suffix, "application/octet-stream")


def no_task_list() -> TaskList:
    """No pairs yet: what a following page serves until `rating_tasks` writes its first list."""
    return TaskList(uri="", version="", created_at="", pairs=())


def load_task_list(uri: str, storage_options: dict[str, Any] | None = None) -> TaskList:
    """Read and validate the task list at `uri` (a local path or s3://, with `Store`'s options)."""
    root, name = posixpath.split(uri.rstrip("/"))
    store = Store(root or ".", storage_options)
    try:
        data = store.read_bytes(name)
    except FileNotFoundError as e:
        raise TaskListError(f"{uri}: no such task list file") from e
    return parse_task_list(uri, data)


def parse_task_list(uri: str, data: bytes) -> TaskList:
    """A `TaskList` from the JSON bytes of the file at `uri`; raises `TaskListError` naming the
    file, each bad pair (by position and pair_id) and why."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskListError(f"{uri}: not a JSON document ({e})") from e
    if not isinstance(doc, dict):
        raise TaskListError(f"{uri}: the top level must be a JSON object, not {type(doc).__name__}")
    problems: list[str] = []
    version = doc.get("version")
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        problems.append(f"version {version!r} is not 16 lowercase hex digits")
    created_at = doc.get("created_at")
    if not isinstance(created_at, str) or not _is_iso_time(created_at):
        problems.append(f"created_at {created_at!r} is not an ISO 8601 time")
    raw_pairs = doc.get("pairs")
    pairs: list[Pair] = []
    if not isinstance(raw_pairs, list) or not raw_pairs:
        problems.append("pairs must be a non-empty list")
        raw_pairs = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_pairs):
        pair, why = _check_pair(raw)
        label = f"pair {index}" + (f" ({raw.get('pair_id')!r})" if isinstance(raw, dict) and "pair_id" in raw else "")
        problems.extend(f"{label}: {reason}" for reason in why)
        if pair is None:
            continue
        if pair.pair_id in seen:
            problems.append(f"{label}: duplicate pair_id (also pair {seen[pair.pair_id]})")
            continue
        seen[pair.pair_id] = index
        pairs.append(pair)
    if problems:
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise TaskListError(f"{uri}: invalid task list ({len(problems)} problem(s)):\n  "
                            + "\n  ".join(shown) + more)
    return TaskList(uri=uri, version=version, created_at=created_at, pairs=tuple(pairs))


def _is_iso_time(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _text(raw: Mapping[str, Any], key: str, why: list[str], optional: bool = False) -> str | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        why.append(f"{key} must be a non-empty string{' or null' if optional else ''}, got {value!r}")
        return None
    return value


def _media(uri: str | None, key: str, types: Mapping[str, str], why: list[str]) -> None:
    if uri is None:
        return
    if not (uri.startswith("/") or uri.startswith("s3://")):
        why.append(f"{key} {uri!r} must be an absolute local path or an s3:// URI")
    elif posixpath.splitext(uri.lower())[1] not in types:
        why.append(f"{key} {uri!r} must end in {' or '.join(types)}")


def _check_pair(raw: Any) -> tuple[Pair | None, list[str]]:
    """(the pair, []) or (None, the reasons it is not one)."""
    if not isinstance(raw, dict):
        return None, [f"must be a JSON object, not {type(raw).__name__}"]
    why: list[str] = []
    pair_id = _text(raw, "pair_id", why)
    prompt_id = _text(raw, "prompt_id", why)
    prompt = _text(raw, "prompt", why, optional=True)
    conditioning = _text(raw, "conditioning", why, optional=True)
    _media(conditioning, "conditioning", IMAGE_TYPES, why)
    pool = raw.get("pool")
    if not isinstance(pool, str) or not POOL_PATTERN.match(pool):
        why.append(f"pool {pool!r} may only hold letters, digits, '_', '.', ':' and '-'")
    gold = raw.get("gold")
    gold_better = None
    if gold is not None:
        if not isinstance(gold, dict) or gold.get("better") not in SIDES:
            why.append(f"gold must be null or {{\"better\": \"a\" | \"b\"}}, got {gold!r}")
        else:
            gold_better = gold["better"]
    sides: dict[str, Side] = {}
    for name in SIDES:
        side = raw.get(name)
        if not isinstance(side, dict):
            why.append(f"{name} must be an object with model and video, got {side!r}")
            continue
        model = _text(side, "model", why)
        video = _text(side, "video", why)
        _media(video, f"{name}.video", VIDEO_TYPES, why)
        if model and gold is None:
            asset, _, version = model.rpartition("@")
            if not asset or not version:
                why.append(f"{name}.model {model!r} must name a checkpoint as asset@data_version")
            elif model.startswith(JUDGE_PREFIX):
                why.append(f"{name}.model {model!r} looks like a judge's rater id, not a model")
        if model and video:
            sides[name] = Side(model=model, video=video)
    if len(sides) == 2 and gold is None and sides["a"].model == sides["b"].model:
        why.append(f"a and b are both {sides['a'].model!r}: a model against itself")
    if len(sides) == 2 and sides["a"].video == sides["b"].video:
        why.append(f"a and b show the same video {sides['a'].video!r}")
    if why:
        return None, why
    return Pair(pair_id=pair_id, pool=pool, prompt_id=prompt_id, prompt=prompt, conditioning=conditioning,
                a=sides["a"], b=sides["b"], gold_better=gold_better), []
