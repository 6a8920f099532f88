"""Training throughput of the tiny profile on this machine (CPU), per stage.

    .venv/bin/python benchmarks/training.py [--steps N]

For stage I (image) and stage II (video, inflated from stage I) it prints seconds per
step and samples per second for (a) the whole step as the trainer runs it (clip decode
by reference + VAE encode + text encode + UNet forward/backward + optimizer + EMA) and
(b) the UNet forward/backward/optimizer alone on latents already in memory, so the ratio
shows what the data path costs. The full-size stage-II GPU measurement (14 x 256x384,
bf16, SDPA, gradient checkpointing on/off, MFU) needs a GPU machine and is not run here.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from svd_dag.settings import bundled_samples_dir  # noqa: E402
from svd_dag.training import edm, unets  # noqa: E402
from svd_dag.training.config import STAGE_PRESETS, TrainConfig  # noqa: E402
from svd_dag.training.train import train  # noqa: E402

BIKES_SHOTS = [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242)]


def _manifest(folder: str) -> str:
    bikes = str(bundled_samples_dir() / "bikes.mp4")
    rows = [{"clip_id": f"b{a}", "video_uri": bikes, "start_frame": a, "end_frame": b, "fps": 25.0,
             "motion_score": 5.0, "caption": "people riding bikes"} for a, b in BIKES_SHOTS]
    path = os.path.join(folder, "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def whole_step(stage_key: str, steps: int, folder: str, init_from: str | None) -> tuple[float, int, str]:
    from accelerate import Accelerator

    preset = {**STAGE_PRESETS[stage_key]["tiny"], "steps": steps, "checkpoint_every": steps}
    cfg = TrainConfig(profile="tiny", manifest_uri=_manifest(folder), output_uri=os.path.join(folder, stage_key),
                      state_dir=os.path.join(folder, f"state-{stage_key}"), init_from=init_from, **preset).validate()
    os.makedirs(cfg.state_dir, exist_ok=True)
    r = train(cfg, Accelerator(cpu=True))
    return r["wall_time_s"] / steps, cfg.batch_size, r["checkpoint_uri"]


def unet_only(stage_key: str, steps: int) -> tuple[float, int]:
    preset = STAGE_PRESETS[stage_key]["tiny"]
    b, f = preset["batch_size"], preset.get("num_frames", 1)
    image_cfg = unets.tiny_image_unet_config(latent_channels=4, cross_attention_dim=32, sample_size=8)
    model = unets.build_image_unet(image_cfg)
    if stage_key != "stage1":
        model = unets.inflate_image_unet(model, unets.video_unet_config_from_image(
            image_cfg, num_frames=f, addition_time_embed_dim=unets.TINY_ADDITION_TIME_EMBED_DIM)).unet
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = (b, 4, 8, 12) if stage_key == "stage1" else (b, f, 4, 8, 12)
    x0, text = torch.randn(shape), torch.randn(b, 16, 32)
    kwargs = {"encoder_hidden_states": text}
    if stage_key != "stage1":
        kwargs["added_time_ids"] = torch.tensor([[7.0, 127.0, 0.0]] * b)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        sig = edm.sample_training_sigmas(b, -1.2, 1.0)
        _, loss = edm.edm_loss(lambda xi, cn: model(xi, cn, **kwargs).sample, x0, sig, torch.randn(shape))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:  # first steps warm up allocators
            times.append(time.perf_counter() - t)
    return statistics.median(times), b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        s1, b1, ckpt = whole_step("stage1", args.steps, folder, None)
        u1, _ = unet_only("stage1", args.steps)
        rows.append(("stage I image, tiny", b1, 1, s1, u1))
        s2, b2, _ = whole_step("stage2", args.steps, folder, ckpt)
        u2, _ = unet_only("stage2", args.steps)
        rows.append(("stage II video, tiny", b2, STAGE_PRESETS["stage2"]["tiny"]["num_frames"], s2, u2))
    print(f"\n{'stage':<22} {'batch':>5} {'frames':>6} {'s/step':>8} {'samples/s':>10} {'UNet-only s/step':>17} {'whole/UNet':>10}")
    for name, b, f, whole, unet in rows:
        print(f"{name:<22} {b:>5} {f:>6} {whole:>8.3f} {b / whole:>10.1f} {unet:>17.3f} {whole / unet:>10.1f}x")


if __name__ == "__main__":
    main()
