"""Shared setup of the rating page's tests (test_rating*.py): real mp4s and task lists on disk,
the server's environment, and a plain HTTP client for loopback (no redirects followed, no
proxy: every request goes to 127.0.0.1 as written)."""

from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from svd_dag.sampling.video_io import encode_mp4

VERSION = "0123456789abcdef"


def video(frames: int, fps: int = 10, seed: int = 0, size: tuple[int, int] = (72, 96)) -> bytes:
    """A real H.264 mp4 (moov at the end, as the project writes them) of moving noise."""
    rng = np.random.default_rng(seed)
    return encode_mp4(rng.integers(0, 255, (frames, *size, 3), dtype=np.uint8), fps)


def png(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def pair(pair_id: str, media: Path, *, models=("i2v_checkpoint@1111", "i2v_lora@2222"), gold=None,
         prompt="a red kite over a beach", conditioning=False, pool="main", frames=(6, 12), fps: int = 10) -> dict:
    """A pair whose videos (a: frames[0] frames, b: frames[1]) and optional PNG are written to `media`."""
    media.mkdir(parents=True, exist_ok=True)
    sides = {}
    for i, (side, model) in enumerate(zip("ab", models)):
        path = media / f"{pair_id}-{side}.mp4"
        path.write_bytes(video(frames[i], fps, seed=zlib.crc32(f"{pair_id}/{side}".encode()) % 1000))
        sides[side] = {"model": model, "video": str(path)}
    frame = None
    if conditioning:
        frame = media / f"{pair_id}-frame.png"
        frame.write_bytes(png())
    return {"pair_id": pair_id, "pool": pool, "prompt_id": f"prompt-{pair_id}", "prompt": prompt,
            "conditioning": str(frame) if frame else None, **sides, "gold": {"better": gold} if gold else None}


def write_tasks(path: Path, pairs: list[dict], version: str = VERSION) -> Path:
    path.write_text(json.dumps({"version": version, "created_at": "2026-12-01T00:00:00+00:00", "pairs": pairs}))
    return path


def server_env(root: Path, **extra: str) -> dict[str, str]:
    """This process's environment without SVD_DAG_* settings, with a home, votes root and rating
    state folder under `root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVD_DAG_")}
    env.update({"SVD_DAG_HOME": str(root / "home"), "SVD_DAG_VOTES_URI": str(root / "votes"),
                "SVD_DAG_RATING_URI": str(root / "rating"), "PYTHONUNBUFFERED": "1", **extra})
    return env


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, dict, bytes]:
    """(status, headers (lower-case names), body bytes) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get_json(url: str) -> tuple[int, dict]:
    status, _, body = http("GET", url)
    return status, json.loads(body)


def post_json(url: str, body: dict) -> tuple[int, dict]:
    status, _, raw = http("POST", url, body)
    return status, json.loads(raw)
