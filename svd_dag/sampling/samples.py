"""The sample-generation step every fine-tune ends with: a few videos from fixed conditioning
inputs and seeds, written as mp4 (the artefact) and GIF (the preview) next to the weights.

Fixed inputs: the first `count` items of the training data in a stable order (clips by
clip_id, orbit objects by name), read from their start, so two checkpoints of the same
fine-tune are compared on the same inputs and seeds. `samples.json` lists what was made.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from svd_dag.sampling import video_io
from svd_dag.sampling.euler import Guidance
from svd_dag.sampling.generate import VideoModel, generate

SAMPLES_DIR = "samples"
INDEX_FILE = "samples.json"


@dataclass
class SampleInput:
    name: str  # stable id of the source (clip_id or orbit object id)
    frames: np.ndarray  # uint8 [F, H, W, 3]: the reference frames at the model's resolution
    elevation_deg: float | None = None
    prompt: str = ""  # what a text-to-video model is given (the clip's caption)


@dataclass
class RenderedSample:
    name: str
    seed: int
    mp4: str  # path relative to the checkpoint folder
    gif: str
    frames: int
    seconds: float
    conditioning: str  # what the model was given


def conditioning_images(task: str, frames: np.ndarray) -> list[np.ndarray]:
    if task == "text":
        return []
    return [frames[0], frames[-1]] if task == "interpolation" else [frames[0]]


def render_samples(model: VideoModel, inputs: list[SampleInput], folder: str, *, num_frames: int, height: int,
                   width: int, steps: int, guidance: Guidance, seeds: list[int], fps: float = 7.0,
                   device: str = "cpu") -> list[RenderedSample]:
    """Render every input x seed into `folder`/samples/ and write samples.json; returns the index.
    `device`: where the model runs (it must already be there, in its dtype)."""
    out_dir = os.path.join(folder, SAMPLES_DIR)
    os.makedirs(out_dir, exist_ok=True)
    rendered = []
    for item in inputs:
        images = conditioning_images(model.task, item.frames)
        for seed in seeds:
            started = time.perf_counter()
            video = generate(model, images, num_frames=num_frames, height=height, width=width, steps=steps,
                             guidance=guidance, seed=seed, fps=fps, elevation_deg=item.elevation_deg,
                             prompt=item.prompt if model.task == "text" else None, device=device)
            seconds = time.perf_counter() - started
            stem = f"{item.name}-seed{seed}"
            for ext, data in (("mp4", video_io.encode_mp4(video, fps)), ("gif", video_io.encode_gif(video, fps))):
                with open(os.path.join(out_dir, f"{stem}.{ext}"), "wb") as f:
                    f.write(data)
            given = {"interpolation": "first and last frame", "text": f"prompt {item.prompt!r}"}.get(model.task, "first frame")
            if item.elevation_deg is not None:
                given += f", elevation {item.elevation_deg:g} deg"
            rendered.append(RenderedSample(item.name, seed, f"{SAMPLES_DIR}/{stem}.mp4", f"{SAMPLES_DIR}/{stem}.gif",
                                           int(video.shape[0]), round(seconds, 3), given))
    if inputs:  # the reference clips themselves, so judges (human or automatic) can compare against them
        for item in inputs:
            with open(os.path.join(out_dir, f"{item.name}-reference.mp4"), "wb") as f:
                f.write(video_io.encode_mp4(item.frames, fps))
    with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
        json.dump({"steps": steps, "guidance": [guidance.min_scale, guidance.max_scale], "seeds": seeds,
                   "adapters": model.adapters, "samples": [asdict(r) for r in rendered]}, f, indent=2)
    return rendered
