"""The pairs people rate: sample videos of current checkpoints side by side, plus gold pairs.

Every fine-tune renders the same fixed inputs with the same seeds (`svd_dag.sampling.samples`,
`samples/samples.json` in the checkpoint folder), so two checkpoints that rendered one input
can be compared on it. `build_pairs` makes one pair per input for every two checkpoints of a
pool that rendered it; each side names its model exactly (`asset[:variant]@data_version`, the
canonical id `preference_votes` resolves), so a vote names the model the rater saw.

Gold pairs are attention checks with a known answer: an input's real reference clip against a
clearly degraded copy of it (`degrade`). A rater who prefers the degraded copy is not looking.

The task list is plain JSON (`task_list`); the rating page (`svd_dag.rating`) reads only it.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from svd_dag.evaluation.votes import canonical_model_id

GOLD_POOL = "gold"
TASKS_DIR = "rating_tasks"
LATEST_POINTER = f"{TASKS_DIR}/latest.json"  # under the storage root: {"version", "tasks_uri"} of the newest list
GOLD_SOURCE, GOLD_DEGRADED = "gold:source", "gold:degraded"


@dataclass(frozen=True)
class RenderedInput:
    """One sample video of one checkpoint: which input and seed, where its video lies, what the
    model was given (a prompt, or frames of the reference clip), and that reference clip."""
    model: str  # canonical id, asset[:variant]@data_version
    input_id: str  # <input name>#seed<seed>: the same for every checkpoint that rendered it
    video: str
    reference: str
    conditioning: str  # samples.json's description: "prompt '...'", "first frame", ...

    @property
    def prompt(self) -> str | None:
        """The text prompt, for text-conditioned samples ("prompt '<repr>'"), else None."""
        if self.conditioning.startswith("prompt "):
            try:
                return str(ast.literal_eval(self.conditioning.removeprefix("prompt ").split(", elevation")[0]))
            except (ValueError, SyntaxError):
                return self.conditioning.removeprefix("prompt ")
        return None


def rendered_inputs(checkpoint: Mapping[str, Any], index: Mapping[str, Any]) -> list[RenderedInput]:
    """The samples of one `checkpoints` row, from its parsed samples.json."""
    base = checkpoint["checkpoint_uri"].rstrip("/")
    model = canonical_model_id(checkpoint["asset"], checkpoint.get("variant") or "", checkpoint["data_version"])
    return [RenderedInput(model=model, input_id=f"{s['name']}#seed{s['seed']}", video=f"{base}/{s['mp4']}",
                          reference=f"{base}/samples/{s['name']}-reference.mp4", conditioning=s["conditioning"])
            for s in index["samples"]]


def pool_of(checkpoint: Mapping[str, Any]) -> str:
    """The comparison pool: the curation study's cells are compared within their criterion
    ("ablation:<criterion>"), every other checkpoint in "main"."""
    if checkpoint["asset"] == "filter_ablation":
        return f"ablation:{(checkpoint.get('variant') or '').split('|', 1)[0]}"
    return "main"


def build_pairs(samples_by_pool: Mapping[str, Iterable[RenderedInput]], seed: int = 0,
                max_pairs_per_pool: int = 0) -> list[dict]:
    """Pairs of two models on one input they both rendered with the same conditioning, per pool.
    Sides are in a fixed order (the rating page shows them left/right at random per rater);
    `max_pairs_per_pool` > 0 keeps a seeded random subset."""
    pairs = []
    for pool in sorted(samples_by_pool):
        by_input: dict[tuple[str, str], list[RenderedInput]] = {}
        for s in samples_by_pool[pool]:
            by_input.setdefault((s.input_id, s.conditioning), []).append(s)
        found = []
        for (input_id, _), rendered in sorted(by_input.items()):
            for a, b in itertools.combinations(sorted(rendered, key=lambda s: s.model), 2):
                if a.model != b.model:
                    found.append(_pair(pool, a, b))
        if max_pairs_per_pool and len(found) > max_pairs_per_pool:
            found = sorted(random.Random(f"{seed}:{pool}").sample(found, max_pairs_per_pool), key=lambda p: p["pair_id"])
        pairs += found
    return pairs


def _pair(pool: str, a: RenderedInput, b: RenderedInput) -> dict:
    pair_id = hashlib.sha256(f"{pool}|{a.input_id}|{a.model}|{b.model}".encode()).hexdigest()[:16]
    return {"pair_id": pair_id, "pool": pool, "prompt_id": a.input_id, "prompt": a.prompt, "conditioning": None,
            "a": {"model": a.model, "video": a.video}, "b": {"model": b.model, "video": b.video}, "gold": None}


def gold_pair(input_id: str, source_video: str, degraded_video: str, prompt: str | None) -> dict:
    """An attention check: the real clip (side a, the better one) against its degraded copy."""
    pair_id = "gold-" + hashlib.sha256(f"{input_id}|{source_video}".encode()).hexdigest()[:11]
    return {"pair_id": pair_id, "pool": GOLD_POOL, "prompt_id": input_id, "prompt": prompt, "conditioning": None,
            "a": {"model": GOLD_SOURCE, "video": source_video}, "b": {"model": GOLD_DEGRADED, "video": degraded_video},
            "gold": {"better": "a"}}


def degrade(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    """A clearly worse copy of a clip for gold pairs: heavy blur, strong noise, washed-out colour
    and every other frame frozen (stutter). No rater who watches both can prefer it."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for i, frame in enumerate(frames):
        source = frames[i - 1] if i % 2 else frame
        height, width = source.shape[:2]
        k = max(3, (min(height, width) // 6) | 1)
        blurred = cv2.GaussianBlur(source, (k, k), 0).astype(np.float32)
        washed = 0.5 * blurred + 0.5 * blurred.mean()
        noisy = washed + rng.normal(0, 40, size=washed.shape)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(out)


def conditioning_frame_png(frames: np.ndarray) -> bytes:
    """The frame an image-conditioned model was given (the reference clip's first), as PNG."""
    import cv2

    ok, png = cv2.imencode(".png", cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the conditioning frame as PNG")
    return png.tobytes()


def task_list(pairs: list[dict], created_at: str) -> tuple[str, bytes]:
    """(version, JSON bytes) of a task list; the version hashes the pairs only, so the same pairs
    make the same task list."""
    version = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:16]
    body = {"version": version, "created_at": created_at, "pairs": pairs}
    return version, json.dumps(body, indent=1, sort_keys=True).encode()


def latest_task_list(store) -> str | None:
    """The URI of the newest task list `rating_tasks` wrote under `store` (the storage root),
    or None when it has not run."""
    if not store.exists(LATEST_POINTER):
        return None
    return json.loads(store.read_bytes(LATEST_POINTER))["tasks_uri"]
