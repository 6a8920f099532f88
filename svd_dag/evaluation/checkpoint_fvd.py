"""FVD of one checkpoint against held-out real clips with the same conditioning.

For each clip of the evaluation split (never trained on), the model generates a video from
that clip's conditioning: its caption (text-to-video stages), its first frame (I2V), its first
and last frames (interpolation). Real set = those clips' frames at the model's frame count,
rate and resolution; generated set = the model's videos. Both go through the same I3D and
`FvdProtocol`; the protocol, N and the feature network are returned with the value.
"""

from __future__ import annotations

import numpy as np

from svd_dag.evaluation.fvd import FvdProtocol, I3dFeatureExtractor, compute_fvd
from svd_dag.sampling.euler import Guidance
from svd_dag.sampling.generate import VideoModel, generate
from svd_dag.sampling.samples import conditioning_images

I3D_STORE_PATH = "i3d/i3d_torchscript.pt"  # StyleGAN-V's TorchScript I3D, in the model store


def generate_for_references(model: VideoModel, references: list[tuple[str, np.ndarray, str]], *, steps: int,
                            seed: int = 0, guidance: Guidance | None = None) -> list[np.ndarray]:
    """One video per (clip_id, real frames [F, H, W, 3], caption), conditioned like the real clip."""
    videos = []
    for i, (_, frames, caption) in enumerate(references):
        f, h, w = frames.shape[:3]
        videos.append(generate(model, conditioning_images(model.task, frames), num_frames=f, height=h, width=w,
                               steps=steps, guidance=guidance, seed=seed + i,
                               prompt=caption if model.task == "text" else None))
    return videos


def checkpoint_fvd(model: VideoModel, references: list[tuple[str, np.ndarray, str]], extractor: I3dFeatureExtractor,
                   *, steps: int, resize: tuple[int, int] = (224, 224), seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """(FVD between the references and the model's videos for them, with its protocol; the videos)."""
    if len(references) < 2:
        raise ValueError(f"FVD needs at least 2 held-out clips, got {len(references)}: raise lvd_f's eval_fraction "
                         "or add data")
    frames = references[0][1].shape[0]
    protocol = FvdProtocol(num_frames=min(16, frames), resize=resize)
    generated = generate_for_references(model, references, steps=steps, seed=seed)
    real = np.stack([r[1][: protocol.num_frames] for r in references])
    fake = np.stack([g[: protocol.num_frames] for g in generated])
    result = compute_fvd(real, fake, extractor, protocol)
    result["sampling_steps"] = steps
    return result, generated
