"""The frame annotators behind one interface: a spec says what to build, its scorer scores batches.

A spec (`MotionSpec`, `CraftSpec`, `ClipSpec`, `CaptionSpec`) is a small picklable recipe.
The asset process names the version it will write from the spec alone (`identity()`,
nothing loaded); a worker, the asset process itself or a Ray actor, calls `build()` once
and keeps the scorer, with its model on the placement it was given, for every batch it
scores. `score(frames_per_clip)` takes the frames of many clips and returns one dict of
columns per clip: CLIP, CRAFT and CoCa run their frames through the model in batches of
`placement.batch_frames` across clips; Farneback works per clip, one thread each.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from svd_dag.curation.devices import Placement
from svd_dag.curation.threads import available_cpus, opencv_threads
from svd_dag.model_store import ModelStore

CPU = Placement("cpu", "fp32")


@dataclass(frozen=True)
class Identity:
    """Who scored a row: the annotator, its model version and whether its weights were real."""

    annotator: str
    model_version: str
    weights: str  # "pretrained" | "random" | "n/a"
    weights_sha256: str = ""  # JSON {weight file: full sha256} of the files it loads ("" when none)


class Scorer(Protocol):
    placement: Placement  # resolved: the device and dtype the rows record

    def score(self, frames_per_clip: list[list[np.ndarray]]) -> list[dict[str, Any]]: ...


def _split(values, frames_per_clip: list[list]) -> list:
    """Per-clip slices of a flat per-frame sequence."""
    out, start = [], 0
    for frames in frames_per_clip:
        out.append(values[start:start + len(frames)])
        start += len(frames)
    return out


def weights_json(files: dict[str, str | None]) -> str:
    """{name: full sha256} of the weight files (or folders) an annotator loads, as JSON (each
    file hashed once per version of it); "" when it loads none."""
    import os

    from svd_dag.curation.captioners import folder_sha256
    from svd_dag.curation.clip_model import cached_file_sha256

    out = {name: folder_sha256(path) if os.path.isdir(path) else cached_file_sha256(path)
           for name, path in files.items() if path}
    return json.dumps(out, sort_keys=True) if out else ""


def _flat(frames_per_clip: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [f for frames in frames_per_clip for f in frames]


@dataclass(frozen=True)
class MotionSpec:
    """Farneback flow on every 2-fps sample, computed `flow_width` px wide; `workers` threads
    (0: one per CPU), one clip each. OpenCV releases the GIL, so threads scale."""

    flow_width: int
    version: str
    workers: int = 0
    which: ClassVar[str] = "all"
    holds_model: ClassVar[bool] = False  # on Ray: plain tasks, no actor to start and keep

    def identity(self) -> Identity:
        return Identity("farneback", self.version, "n/a")

    def build(self) -> "MotionScorer":
        return MotionScorer(self)


class MotionScorer:
    placement = CPU

    def __init__(self, spec: MotionSpec):
        self.spec = spec

    def score(self, frames_per_clip: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        from svd_dag.curation.motion import clip_motion

        workers = min(self.spec.workers or available_cpus(), len(frames_per_clip))
        if workers <= 1:
            return [clip_motion(frames, self.spec.flow_width) for frames in frames_per_clip]
        with opencv_threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="farneback") as pool:
            return list(pool.map(lambda frames: clip_motion(frames, self.spec.flow_width), frames_per_clip))


@dataclass(frozen=True)
class CraftSpec:
    """CRAFT text detection (easyocr's detector, the packaged real weights) on key frames.

    On the CPU, frames go through it `cpu_batch_frames` at a time (default 1): CRAFT is a
    VGG-16 on 512-px frames, compute-bound on one frame already, and larger CPU batches
    measured 12-16 % slower (docs/performance.md). On a GPU, `placement.batch_frames`. The
    network runs in NHWC memory (`channels_last`), 1.08-1.11x the old NCHW rate on the CPU."""

    placement: Placement = field(default_factory=Placement)
    cpu_batch_frames: int = 1
    channels_last: bool = True  # NHWC convolutions (False: easyocr's NCHW, the old per-clip path)
    which: ClassVar[str] = "keyframes"

    def identity(self) -> Identity:
        from svd_dag.curation.ocr import craft_version

        import os

        from svd_dag.curation.ocr import DETECTOR_FILE, craft_weights_dir

        path = os.path.join(craft_weights_dir(), DETECTOR_FILE)
        return Identity("craft", craft_version(), "pretrained", weights_json({DETECTOR_FILE: path}))

    def build(self) -> "CraftScorer":
        return CraftScorer(self)


class CraftScorer:
    def __init__(self, spec: CraftSpec):
        import dataclasses

        from svd_dag.curation.ocr import get_text_detector

        placement = spec.placement.resolve()
        if placement.device == "cpu":
            placement = dataclasses.replace(placement, batch_frames=max(1, spec.cpu_batch_frames))
        self.detector = get_text_detector(placement=placement, channels_last=spec.channels_last)
        self.placement = placement

    def score(self, frames_per_clip: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        fractions = self.detector.text_area_fractions(_flat(frames_per_clip))
        return [{"text_area": max(per_clip), "frame_text_areas": list(per_clip)}
                for per_clip in _split(fractions, frames_per_clip)]


@dataclass(frozen=True)
class ClipSpec:
    """open_clip image embeddings of key frames, from the model store (random init without)."""

    arch: str
    models: ModelStore | None
    placement: Placement = field(default_factory=Placement)
    seed: int = 0
    which: ClassVar[str] = "keyframes"

    def identity(self) -> Identity:
        from svd_dag.curation.clip_model import open_clip_version

        path = self.models.find_weights("clip", self.arch) if self.models is not None else None
        weights, version = open_clip_version(self.arch, path, self.seed)
        return Identity("open_clip", version, weights, weights_json({f"clip/{self.arch}": path}))

    def embed_dim(self) -> int:
        from svd_dag.curation.compat import import_open_clip

        return int(import_open_clip().get_model_config(self.arch)["embed_dim"])

    def build(self) -> "ClipScorer":
        return ClipScorer(self)


class ClipScorer:
    def __init__(self, spec: ClipSpec):
        from svd_dag.curation.clip_model import load_clip

        self.spec = spec
        self.model = load_clip(spec.arch, spec.models, spec.seed, placement=spec.placement)
        self.placement = Placement(self.model.device, self.model.dtype, self.model.batch_frames)

    def score(self, frames_per_clip: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        from svd_dag.curation.clip_model import embed_images

        vectors = embed_images(self.model, _flat(frames_per_clip))
        return [{"arch": self.spec.arch, "embed_dim": self.model.embed_dim, "frames": len(v), "vectors": v}
                for v in _split(vectors, frames_per_clip)]


@dataclass(frozen=True)
class CaptionSpec:
    """The pluggable captioners: CoCa on the middle frame (batched across clips), the video
    captioner on the key frames and an LLM summary, each only when its weights are there."""

    models: ModelStore | None
    coca_arch: str = "coca_ViT-B-32"
    coca_max_tokens: int = 20
    placement: Placement = field(default_factory=Placement)
    which: ClassVar[str] = "keyframes"

    def captioners(self, placement: Placement | None = None) -> list:
        """Every configured captioner (not loaded); without `placement`, on this process's default
        device (versions and status do not depend on it)."""
        from svd_dag.curation.captioners import build_captioners

        return build_captioners(self.models, self.coca_arch, coca_max_tokens=self.coca_max_tokens,
                                placement=placement)

    def identity(self) -> Identity:
        from svd_dag.curation.datasets import json_digest

        ready = [c for c in self.captioners() if c.status == "ok"]
        version = "+".join(f"{c.name}={c.version}" for c in ready) + "@" + \
            json_digest([getattr(c, "params", None) for c in ready])[:8]
        weights = "random" if any(c.weights == "random" for c in ready) else "pretrained"
        files = {c.name: getattr(c, "path", None) or getattr(c, "folder", None) for c in ready}
        return Identity("captioners", version, weights, weights_json(files))

    def build(self) -> "CaptionScorer":
        return CaptionScorer(self)


class CaptionScorer:
    def __init__(self, spec: CaptionSpec):
        self.ready = [c for c in spec.captioners(spec.placement) if c.status == "ok"]
        coca = next((c for c in self.ready if c.name == "coca"), None)
        if coca is not None:
            coca.load()
        self.placement = coca.placement if coca is not None else CPU

    def score(self, frames_per_clip: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        from svd_dag.curation.captioners import caption_clips

        return [{"caption": t.get("coca"), "captions_by_model": json.dumps(t)}
                for t in caption_clips(self.ready, frames_per_clip)]
