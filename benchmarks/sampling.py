"""Seconds per generated video: our I2V sampler against diffusers' StableVideoDiffusionPipeline
on the same weights and settings, in the same run.

    .venv/bin/python benchmarks/sampling.py                        # tiny I2V on CPU
    .venv/bin/python benchmarks/sampling.py --checkpoint DIR       # an i2v_checkpoint folder
    .venv/bin/python benchmarks/sampling.py --full --device cuda   # SVD-size UNet, 14 x 576x1024, bf16, SDPA

Both sides get the same conditioning image, seed, initial latents, 25 Euler steps, SVD's
guidance ramp (1.0 -> 2.5 for 14 frames) and VAE decode chunk. `--full` builds the
published SVD-XT architecture with random weights (no SVD weights here) unless
`--checkpoint` names a folder with real ones: timings and peak memory do not depend on the
weights' values. Peak GPU memory is `torch.cuda.max_memory_allocated` per run; the target
is < 24 GB with the chunked VAE decode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build_i2v_folder(folder: str, full: bool) -> str:
    """A random-init I2V pipeline folder: tiny (our tiny profile's shapes) or SVD size."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

    from svd_dag.sampling.euler import SVD_SCHEDULER_CONFIG
    from svd_dag.training import finetune_models, unets
    from svd_dag.training.components import build_vae
    from svd_dag.training.conditioning_frames import load_image_encoder

    if full:
        from diffusers import AutoencoderKLTemporalDecoder
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        unet = UNetSpatioTemporalConditionModel(num_frames=14)  # diffusers' defaults are SVD's architecture
        vae = AutoencoderKLTemporalDecoder(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                                           latent_channels=4, layers_per_block=2)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                                 num_attention_heads=16, patch_size=14, projection_dim=1024))
        processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    else:
        image_cfg = unets.tiny_image_unet_config(latent_channels=4, cross_attention_dim=32, sample_size=8)
        unet = unets.build_video_unet(unets.video_unet_config_from_image(
            image_cfg, num_frames=4, addition_time_embed_dim=unets.TINY_ADDITION_TIME_EMBED_DIM))
        unet = finetune_models.widen_conv_in(unet, 8)
        vae = build_vae("tiny", None, 0)[0]
        enc = load_image_encoder("svd-tiny-vision", 32)
        encoder, processor = enc.model, enc.processor
    encoder.config.svd_dag_weights = "random"
    StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, feature_extractor=processor,
                                 scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)).save_pretrained(folder)
    with open(os.path.join(folder, "svd_dag_training.json"), "w") as f:
        json.dump({"task": "i2v", "note": "benchmark: random weights"}, f)
    return folder


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    from svd_dag.sampling.euler import Guidance
    from svd_dag.sampling.generate import generate, load_video_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="an i2v_checkpoint folder (default: build a random-init one)")
    ap.add_argument("--full", action="store_true", help="SVD-size: 14 x 576x1024 (GPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--decode-chunk", type=int, default=8)
    args = ap.parse_args()
    frames, height, width = (14, 576, 1024) if args.full else (4, 32, 48)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}, dtype {dtype}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoint or build_i2v_folder(tmp, args.full)
        ours = load_video_model(folder).to(args.device, dtype)
        pipe = StableVideoDiffusionPipeline.from_pretrained(folder, dtype=dtype).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        latents = torch.randn((1, frames, 4, height // ours.vae_scale, width // ours.vae_scale),
                              generator=torch.Generator().manual_seed(0))
        guidance = Guidance(1.0, 2.5)

        def run_ours():
            return generate(ours, [image], num_frames=frames, height=height, width=width, steps=args.steps,
                            guidance=guidance, seed=0, decode_chunk_size=args.decode_chunk, device=args.device)

        def run_diffusers():
            return pipe(Image.fromarray(image), height=height, width=width, num_frames=frames,
                        num_inference_steps=args.steps, min_guidance_scale=1.0, max_guidance_scale=2.5,
                        decode_chunk_size=args.decode_chunk, latents=latents.to(args.device, dtype),
                        output_type="np").frames[0]

        results = {}
        for name, fn in (("ours", run_ours), ("diffusers", run_diffusers)):
            fn()  # warm-up (allocator, kernels)
        for _ in range(args.repeat):  # round-robin so load from other processes spreads over both
            for name, fn in (("ours", run_ours), ("diffusers", run_diffusers)):
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                _sync(args.device)
                t = time.perf_counter()
                fn()
                _sync(args.device)
                peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
                results.setdefault(name, []).append((time.perf_counter() - t, peak))
    base = statistics.median(t for t, _ in results["diffusers"])
    print(f"\n{frames} frames x {height}x{width}, {args.steps} steps, guidance 1.0->2.5, decode chunk {args.decode_chunk}, "
          f"median of {args.repeat}")
    print(f"{'sampler':<12} {'s/video':>9} {'vs diffusers':>13} {'peak GiB':>9}")
    for name, runs in results.items():
        med = statistics.median(t for t, _ in runs)
        print(f"{name:<12} {med:>9.3f} {med / base:>12.2f}x {max(p for _, p in runs):>9.2f}")


if __name__ == "__main__":
    main()
