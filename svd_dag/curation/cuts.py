"""SVD's cascaded cut detection, fed from one decode, and the merge of its passes.

Each pass is a PySceneDetect detector fed every `step`-th decoded frame (native fps,
~15 fps, ~8 fps by default; lower thresholds at lower rates). Low-rate passes see a
gradual transition as a larger jump, which is why they exist; they also see fast motion
as a larger jump, which is why their extra cuts are not taken on trust:

- a low-rate cut that lands near a native cut is the same boundary: the native frame
  is kept and the low-rate pass is added to the boundary's `passes`;
- a low-rate cut with no native partner is kept only when the colour distribution
  before and after it really differs (total-variation distance of HSV histograms
  averaged over half a second each side, motion moves pixels but barely changes the
  histogram), and it is placed on the native frame where the content flips from
  "before" to "after" (the middle of a fade, the exact frame of a hard cut).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

DETECTORS = ("content", "adaptive", "zscore")
HIST_BINS = (8, 4, 4)  # H, S, V


@dataclass(frozen=True)
class PassConfig:
    name: str
    target_fps: float | None  # None: every frame
    threshold: float
    detector: str = "content"

    def step(self, native_fps: float) -> int:
        if self.target_fps is None or self.target_fps >= native_fps:
            return 1
        return max(1, int(round(native_fps / self.target_fps)))


@dataclass(frozen=True)
class CascadeConfig:
    passes: tuple[PassConfig, ...] = (
        PassConfig("native", None, 27.0),
        PassConfig("15fps", 15.0, 22.0),
        PassConfig("8fps", 8.0, 17.0),
    )
    min_scene_len_s: float = 0.5
    confirm_hist_distance: float = 0.3
    detect_width: int = 256

    def validate(self) -> None:
        if not self.passes:
            raise ValueError("the cascade needs at least one pass")
        if self.passes[0].target_fps is not None:
            raise ValueError("the first cascade pass must run at native fps (target_fps=None)")
        for p in self.passes:
            if p.detector not in DETECTORS:
                raise ValueError(f"pass {p.name!r}: detector must be one of {DETECTORS}, got {p.detector!r}")
            if p.threshold <= 0:
                raise ValueError(f"pass {p.name!r}: threshold must be > 0, got {p.threshold}")
        if not 0 < self.confirm_hist_distance <= 1:
            raise ValueError("confirm_hist_distance is a total-variation distance in (0, 1]")


@dataclass
class Boundary:
    frame: int
    passes: list[str] = field(default_factory=list)


class HsvContentDetector(ContentDetector):
    """PySceneDetect's ContentDetector fed each frame's score instead of the frame.

    The cascade converts each frame to HSV once, where it is decoded, and scores it against
    the frame the pass saw before (`content_score`). With ContentDetector's default weights
    (hue, saturation, luma 1, edges 0) its score is the mean absolute HSV difference over
    the three channels, which `cv2.norm(L1)` computes in one call; thresholds, the flash
    filter and min_scene_len stay PySceneDetect's.
    """

    def _calculate_frame_score(self, timecode: FrameTimecode, frame_score: float) -> float:
        return frame_score


def content_score(hsv: np.ndarray, last_hsv: np.ndarray) -> float:
    return float(cv2.norm(hsv, last_hsv, cv2.NORM_L1)) / hsv.size


class ZScoreDetector:
    """Koala-36M's test for gradual transitions as a cascade pass: frames whose change from
    the previous one lies more than `threshold` standard deviations above the mean change of
    the `window_s` seconds before them form a transition, reported at its middle frame once
    it ends.

    The change is the total-variation distance between consecutive HSV histograms, which
    camera and object motion barely move (steady shots: ~0.01-0.05) and which every frame of
    a fade moves by a share of the whole shot change. A slow fade keeps each frame's change
    small, so a fixed threshold misses it, but lifts it out of the steady distribution.
    `min_change` keeps a near-static shot, whose sigma is ~0, from firing on noise. The
    statistics are frozen while a transition lasts and start again after it.
    """

    def __init__(self, threshold: float, min_scene_len: float, fps: float, window_s: float = 2.0,
                 min_change: float = 0.05, min_history: int = 5):
        self.threshold, self.min_change, self.min_history = threshold, min_change, min_history
        self.window = max(min_history, int(round(window_s * fps)))
        self.min_gap = max(1, int(round(min_scene_len * fps)))
        self.changes: list[float] = []
        self._last_hist: np.ndarray | None = None
        self._last_cut = -self.min_gap
        self._run: list[FrameTimecode] = []  # the frames of the transition under way

    def process_frame(self, timecode: FrameTimecode, hist: np.ndarray) -> list[FrameTimecode]:
        """`hist`: the frame's `hsv_histogram`, which the cascade computes once per frame."""
        last, self._last_hist = self._last_hist, hist
        if last is None:
            return []
        change = _tv(hist, last)
        history = self.changes[-self.window :]
        if len(history) >= self.min_history and change >= self.min_change \
                and change > np.mean(history) + self.threshold * max(float(np.std(history)), 1e-3):
            self._run.append(timecode)
            return []
        self.changes.append(change)
        return self._end_run()

    def _end_run(self) -> list[FrameTimecode]:
        run, self._run = self._run, []
        if not run:
            return []
        middle = run[len(run) // 2]
        self.changes = []
        if middle.frame_num - self._last_cut < self.min_gap:
            return []
        self._last_cut = middle.frame_num
        return [middle]

    def post_process(self, timecode: FrameTimecode) -> list[FrameTimecode]:
        return self._end_run()


def _make_detector(p: PassConfig, min_scene_len_s: float, pass_fps: float):
    if p.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=p.threshold, min_scene_len=min_scene_len_s)
    if p.detector == "zscore":
        return ZScoreDetector(threshold=p.threshold, min_scene_len=min_scene_len_s, fps=pass_fps)
    return HsvContentDetector(threshold=p.threshold, min_scene_len=min_scene_len_s)


def hsv_histogram(hsv: np.ndarray) -> np.ndarray:
    h = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    return (h / max(h.sum(), 1.0)).astype(np.float32)


@dataclass
class FrameFeatures:
    """What the cascade's passes need from one frame, computed where the frame is decoded."""

    index: int
    hist: np.ndarray
    scores: list[float | None]  # per pass: content score on this pass's frames (None elsewhere)
    bgr: np.ndarray | None = None  # kept only for adaptive passes, which score frames themselves


class FeatureExtractor:
    """Per-frame features of a run of consecutive frames: a whole video, or one segment of it.

    A pass's score compares a frame with the one `step` frames earlier. At the start of a
    segment that frame lies in the previous segment: the score is left out (`missing`) and
    `fill_missing` completes it from that segment's last frames (`tail`).
    """

    def __init__(self, cfg: CascadeConfig, native_fps: float):
        self.steps = [p.step(native_fps) for p in cfg.passes]
        self.content = [p.detector == "content" for p in cfg.passes]
        self.keep_bgr = any(p.detector == "adaptive" for p in cfg.passes)
        self.reach = max(self.steps)
        self.tail: dict[int, np.ndarray] = {}  # HSV of the last `reach` frames seen
        self.head: dict[int, np.ndarray] = {}  # HSV of the frames whose scores are missing
        self.missing: list[tuple[FrameFeatures, int]] = []  # (frame, pass) scored by fill_missing

    def __call__(self, index: int, bgr_small: np.ndarray) -> FrameFeatures:
        hsv = cv2.cvtColor(bgr_small, cv2.COLOR_BGR2HSV)
        f = FrameFeatures(index, hsv_histogram(hsv), [None] * len(self.steps), bgr_small if self.keep_bgr else None)
        for i, (step, content) in enumerate(zip(self.steps, self.content)):
            if not content or index % step:
                continue
            last = self.tail.get(index - step)
            if index == 0 or last is not None:
                f.scores[i] = 0.0 if index == 0 else content_score(hsv, last)  # a pass's first frame scores 0
            else:
                self.missing.append((f, i))
                self.head[index] = hsv
        self.tail[index] = hsv
        self.tail.pop(index - self.reach, None)
        return f

    def fill_missing(self, previous: FeatureExtractor) -> None:
        """Score this segment's first frames against the last frames of the one before it."""
        for f, i in self.missing:
            f.scores[i] = content_score(self.head[f.index], previous.tail[f.index - self.steps[i]])
        self.missing, self.head = [], {}


class CascadeDetector:
    """Feed frames in decode order with `push`, or their features with `decide`; `finish`
    returns merged boundaries.

    `push` extracts and decides in one go. A video decoded in segments extracts features in
    each segment and hands them to `decide` in frame order afterwards: the passes' decisions
    (thresholds, flash filter, min_scene_len, z-score history) need frames in order, the
    features do not. Adaptive passes score frames themselves and so need `push`.
    """

    def __init__(self, cfg: CascadeConfig, native_fps: float):
        cfg.validate()
        self.cfg = cfg
        self.fps = native_fps
        self.steps = [p.step(native_fps) for p in cfg.passes]
        self.detectors = [_make_detector(p, cfg.min_scene_len_s, native_fps / step) for p, step in zip(cfg.passes, self.steps)]
        self.raw_cuts: list[list[int]] = [[] for _ in cfg.passes]
        self.hists: list[np.ndarray] = []
        self.last_index = -1
        self.extract = FeatureExtractor(cfg, native_fps)

    @property
    def segmentable(self) -> bool:
        """Whether features may be extracted apart from the decisions (no adaptive pass)."""
        return not self.extract.keep_bgr

    def push(self, index: int, bgr_small: np.ndarray) -> None:
        self.decide(self.extract(index, bgr_small))

    def decide(self, f: FrameFeatures) -> None:
        self.last_index = f.index
        self.hists.append(f.hist)
        tc = None
        for i, (det, step) in enumerate(zip(self.detectors, self.steps)):
            if f.index % step == 0:
                tc = tc or FrameTimecode(f.index, fps=self.fps)
                frame = f.scores[i] if isinstance(det, HsvContentDetector) else f.hist if isinstance(det, ZScoreDetector) \
                    else f.bgr
                self.raw_cuts[i].extend(c.frame_num for c in det.process_frame(tc, frame))

    def finish(self) -> list[Boundary]:
        if self.last_index >= 0:
            tc = FrameTimecode(self.last_index, fps=self.fps)
            for i, det in enumerate(self.detectors):
                self.raw_cuts[i].extend(c.frame_num for c in det.post_process(tc))
        return merge_cuts(self.raw_cuts, self.cfg, self.steps, np.asarray(self.hists), self.fps)


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(a - b).sum())


def merge_cuts(
    raw_cuts: list[list[int]],
    cfg: CascadeConfig,
    steps: list[int],
    hists: np.ndarray,
    fps: float,
) -> list[Boundary]:
    """Merge per-pass cuts into one boundary list (see module docstring)."""
    names = [p.name for p in cfg.passes]
    bounds: dict[int, Boundary] = {f: Boundary(f, [names[0]]) for f in sorted(set(raw_cuts[0])) if f > 0}

    # Low-rate cuts: attach to a native boundary, or collect as candidates.
    candidates: list[tuple[int, int, str]] = []  # (detected frame, step, pass)
    for name, step, cuts in zip(names[1:], steps[1:], raw_cuts[1:]):
        for k in sorted(set(cuts)):
            lo, hi = k - 2 * step - 2, k + 2
            near = [f for f in bounds if lo <= f <= hi]
            if near:
                b = bounds[min(near, key=lambda f: abs(f - k))]
                if name not in b.passes:
                    b.passes.append(name)
            else:
                candidates.append((k, step, name))

    # Cluster candidates that point at the same transition, then confirm and place each.
    candidates.sort()
    clusters: list[list[tuple[int, int, str]]] = []
    for c in candidates:
        if clusters and c[0] - clusters[-1][-1][0] <= 2 * max(c[1], clusters[-1][-1][1]) + 2:
            clusters[-1].append(c)
        else:
            clusters.append([c])
    n = len(hists)
    half_s = max(1, int(round(0.5 * fps)))
    for cl in clusters:
        w0 = max(1, min(k - 2 * s - 2 for k, s, _ in cl))
        w1 = min(n - 1, max(k for k, _, _ in cl))
        prev_b = max([0] + [f for f in bounds if f <= w0])
        next_b = min([n] + [f for f in bounds if f > w1])
        before = hists[max(prev_b, w0 - half_s) : w0]
        after = hists[w1 : min(next_b, w1 + half_s)]
        if len(before) == 0 or len(after) == 0:
            continue
        hb, ha = before.mean(axis=0), after.mean(axis=0)
        if _tv(hb, ha) < cfg.confirm_hist_distance:
            continue  # motion, not a new shot
        frame = next((f for f in range(w0, w1 + 1) if _tv(hists[f], ha) < _tv(hists[f], hb)), w1)
        passes = sorted({name for _, _, name in cl}, key=names.index)
        bounds[frame] = Boundary(frame, passes)
    return [bounds[f] for f in sorted(bounds)]
