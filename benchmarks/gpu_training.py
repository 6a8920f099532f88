"""GPU training benchmark (device script): stage-II training steps, a killed-and-resumed training
run, and the I2V sampler against diffusers' pipeline. Every model has random-init weights.

    bash benchmarks/gpu_training.sh                        # on the device machine (one H200)
    .venv/bin/python benchmarks/gpu_training.py --smoke    # here: CPU, tiny configs, every code path

Sections (run in the order 1, 3, 2, each time-boxed; a row is printed as soon as it is measured
and the JSON file is rewritten after every row, so a run stopped at its limit keeps what it had):

1. Stage-II training steps. The full-size video UNet built as the project builds it
   (`svd_dag.training.unets`: SD 2.1's image-UNet config inflated into
   `UNetSpatioTemporalConditionModel`, 1524.6M params), 14 frames of 256x384 (latents 4 x 32x48),
   text conditioning as random encoder_hidden_states [B, 77, 1024] and added_time_ids, the EDM
   v-form loss of `svd_dag.training.edm`, bf16 autocast over fp32 master weights (what accelerate's
   mixed_precision="bf16" does), diffusers' default attention processor (SDPA), gradient clipping,
   AdamW (torch's default implementation: foreach on CUDA) and an EMAModel step, i.e. the trainer's
   step without its data path. Gradient checkpointing on and off; the largest micro-batch that fits
   (1, 2, 4, ... until torch.cuda.OutOfMemoryError); seconds per step (median after warm-up, with
   torch.cuda.synchronize), samples/s, peak memory, and model FLOP utilisation: FLOPs counted with
   torch.utils.flop_counter.FlopCounterMode on one forward+backward at batch 1 *without*
   checkpointing (so recomputation is not counted as useful work), scaled by the batch, over the
   step time, over the dense bf16 peak (989 TFLOP/s, the H100/H200 SXM spec figure).
2. Kill and resume. `python -m svd_dag.training.train --config run.json` (the project's own entry
   point, I2V fine-tune task, so no text encoder is needed) on synthetic clips for 30 steps with
   EMA, resumable state every 15 steps; the first process is SIGKILLed as soon as its first state
   is complete, a second one resumes from it and finishes. By default the UNet is the full
   architecture at half width (394M params): a full-size state is ~24 GB (fp32 weights 6.1 GB +
   AdamW 12.2 GB + EMA 6.1 GB), and two kept states plus the final weights and the parent would
   not fit the device machine's 64 GB disk.
3. The I2V sampler at 14 x 576x1024, 25 steps: ours (`svd_dag.sampling.generate.generate`, which
   drives `sample_euler`) against diffusers' `StableVideoDiffusionPipeline` on the same modules
   (SVD-I2V-shaped UNet with 8 input channels, SVD's temporal-decoder VAE, a ViT-H/14 CLIP vision
   tower), bf16, the same image, initial latents and conditioning noise, guidance 1.0 -> 3.0,
   fps 7, motion bucket 127, noise augmentation 0.02, decode chunk 8.

--smoke runs the same code on the CPU with tiny configs and a couple of steps (the OOM search
meets a simulated OutOfMemoryError above batch 2; CUDA-only timing and the matmul ceiling are
skipped), in well under a minute.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

WEIGHTS = "random-init weights"
PEAK_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16, the datasheet figure (no sparsity)
FIT_80GB_GIB = 78.0  # an 80 GB card shows ~79.6 GiB; ~1.5 GiB go to the CUDA context and workspaces
SAMPLER_PEAK_TARGET_GIB = 24.0 * 1e9 / 2**30  # "< 24 GB" read as 24e9 bytes (22.35 GiB)
SAMPLER_SPEEDUP_TARGET = 1.3
MFU_TARGET = 0.40
EQUAL_OUTPUT_MAX_LEVELS = 2  # "equal output": no pixel differs by more than 2/255 (bf16 runs)
GIB = 2**30


# ----------------------------------------------------------------------------- reporting


class Report:
    """Rows printed as they are measured (flushed) and the whole record rewritten as JSON."""

    def __init__(self, path: str | None, meta: dict[str, Any]):
        self.path = path
        self.data: dict[str, Any] = {"weights": WEIGHTS, **meta, "sections": {}, "targets": []}
        self.save()

    def section(self, key: str, title: str, **info: Any) -> dict[str, Any]:
        sec = {"title": title, "weights": WEIGHTS, "status": "running", "rows": [], **info}
        self.data["sections"][key] = sec
        say(f"\n## {title} ({WEIGHTS})")
        for k, v in info.items():
            say(f"- {k}: {v}")
        self.save()
        return sec

    def row(self, sec: dict[str, Any], row: dict[str, Any], line: str) -> None:
        sec["rows"].append({"weights": WEIGHTS, **row})
        say(line)
        self.save()

    def note(self, sec: dict[str, Any], key: str, value: Any, line: str | None = None) -> None:
        sec[key] = value
        if line:
            say(line)
        self.save()

    def target(self, name: str, value: Any, threshold: str, met: bool | None, detail: str = "") -> None:
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        self.data["targets"].append({"target": name, "value": value, "threshold": threshold, "met": met,
                                     "verdict": verdict, "detail": detail, "weights": WEIGHTS})
        say(f"TARGET {name}: {value} (need {threshold}) -> {verdict}{'; ' + detail if detail else ''}")
        self.save()

    def save(self) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_plain(self.data), f, indent=2, default=str, allow_nan=False)
        os.replace(tmp, self.path)


def _plain(value: Any) -> Any:
    """JSON-ready: NaN and infinities (the CPU's 'no peak memory') become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def say(line: str) -> None:
    print(line, flush=True)


class Clock:
    """The whole run's deadline; each section takes a box inside it."""

    def __init__(self, total_s: float):
        self.start = time.monotonic()
        self.end = self.start + total_s

    def left(self) -> float:
        return self.end - time.monotonic()

    def deadline(self, box_s: float) -> float:
        return min(time.monotonic() + box_s, self.end)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peaks(device: str) -> tuple[float, float]:
    """(max allocated, max reserved) in GiB since the last reset; NaN on the CPU."""
    if not device.startswith("cuda"):
        return float("nan"), float("nan")
    return torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def fmt(x: float | None, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("CUBLAS_STATUS_ALLOC_FAILED" in text or "out of memory" in text.lower())


def matmul_ceiling(device: str) -> dict[str, Any]:
    """bf16 8192^3 matrix products on random data (METHOD.md: measure the ceiling once)."""
    n, reps = 8192, 10
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    stop.record()
    sync(device)
    seconds = start.elapsed_time(stop) / 1e3
    del a, b
    free_memory(device)
    return {"bf16_matmul_tflops": round(2 * n**3 * reps / seconds / 1e12, 1),
            "how": f"{reps} bf16 {n}x{n}x{n} products on random data after 3 warm-ups, CUDA events"}


# ------------------------------------------------------------------------------ section 1


def build_stage2_unet(size: str, device: str):
    """The stage-II video UNet the project's way: image-UNet config -> inflation (random init)."""
    from svd_dag.training import unets

    if size == "full":
        image_cfg, frames, add_dim = unets.full_image_unet_config(), 14, unets.FULL_ADDITION_TIME_EMBED_DIM
    else:
        image_cfg = unets.tiny_image_unet_config(cross_attention_dim=32, sample_size=8)
        frames, add_dim = 4, unets.TINY_ADDITION_TIME_EMBED_DIM
    torch.manual_seed(0)
    with torch.device(device):
        image = unets.build_image_unet(image_cfg)
        video_cfg = unets.video_unet_config_from_image(image.config, num_frames=frames, addition_time_embed_dim=add_dim)
        unet, report = unets.inflate_image_unet(image, video_cfg)
    del image
    free_memory(device)
    return unet.to(device).train(), report, frames


class Stage2Step:
    """The trainer's optimisation step on latents already in memory (no data path)."""

    def __init__(self, unet, device: str, frames: int, latent_hw: tuple[int, int], tokens: int,
                 fake_oom_above: int | None = None):
        from diffusers.training_utils import EMAModel

        self.unet, self.device, self.frames, self.latent_hw, self.tokens = unet, device, frames, latent_hw, tokens
        self.width = unet.config.cross_attention_dim
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=1e-2)  # as svd_dag.training.train
        self.ema = EMAModel(self.params, decay=0.9999)
        self.ema.to(device)
        self.fake_oom_above = fake_oom_above
        self.device_type = "cuda" if device.startswith("cuda") else "cpu"

    def inputs(self, b: int) -> tuple[torch.Tensor, ...]:
        from svd_dag.training import conditioning, edm

        h, w = self.latent_hw
        g = torch.Generator(self.device).manual_seed(1000 + b)
        x0 = torch.randn(b, self.frames, 4, h, w, device=self.device, generator=g)
        noise = torch.randn(b, self.frames, 4, h, w, device=self.device, generator=g)
        sigmas = edm.sample_training_sigmas(b, -1.2, 1.0, device=self.device)
        text = torch.randn(b, self.tokens, self.width, device=self.device, generator=g)
        ids = conditioning.added_time_ids(8.0, 127, 0.0, batch_size=b, device=self.device)
        return x0, noise, sigmas, text, ids

    def forward_backward(self, inp: tuple[torch.Tensor, ...]) -> torch.Tensor:
        from svd_dag.training import edm

        x0, noise, sigmas, text, ids = inp

        def model_fn(x_in, c_noise):
            return self.unet(x_in, c_noise, encoder_hidden_states=text, added_time_ids=ids).sample

        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            _, loss = edm.edm_loss(model_fn, x0, sigmas, noise)
        if self.fake_oom_above is not None and x0.shape[0] > self.fake_oom_above:
            raise torch.cuda.OutOfMemoryError(f"simulated (--smoke): batch {x0.shape[0]} > {self.fake_oom_above}")
        loss.backward()
        return loss.detach()

    def update(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.step(self.params)

    def step(self, inp) -> torch.Tensor:
        loss = self.forward_backward(inp)
        self.update()
        return loss

    def try_step(self, b: int) -> tuple[bool, str]:
        """One step at batch b; (fits, message). An OOM is cleaned up so the next try starts clean."""
        message = ""
        try:
            loss = self.step(self.inputs(b))
            sync(self.device)
            if not torch.isfinite(loss):
                return True, f"loss {loss.item()} not finite"
            return True, ""
        except Exception as exc:  # noqa: BLE001 - only OOMs are expected; anything else is re-raised
            if not is_oom(exc):
                raise
            message = str(exc).splitlines()[0][:160]
        # Out of the except block: the traceback, and the activations its frames held, are gone.
        self.opt.zero_grad(set_to_none=True)
        free_memory(self.device)
        return False, message


def count_flops(stepper: Stage2Step, b: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    inp = stepper.inputs(b)
    counter = FlopCounterMode(display=False)
    with counter:
        stepper.forward_backward(inp)
    stepper.opt.zero_grad(set_to_none=True)
    del inp
    free_memory(stepper.device)
    return float(counter.get_total_flops())


def time_steps(stepper: Stage2Step, b: int, warmup: int, n_max: int, n_min: int, deadline: float) -> dict[str, Any]:
    inp = stepper.inputs(b)
    for _ in range(warmup):
        stepper.step(inp)
    sync(stepper.device)
    reset_peak(stepper.device)
    times, losses = [], []
    while len(times) < n_max and (len(times) < n_min or time.monotonic() < deadline):
        sync(stepper.device)
        t = time.perf_counter()
        losses.append(stepper.step(inp))
        sync(stepper.device)
        times.append(time.perf_counter() - t)
    alloc, reserved = peaks(stepper.device)
    del inp
    return {"times": times, "median_s": statistics.median(times), "peak_alloc_gib": alloc,
            "peak_reserved_gib": reserved, "loss_finite": all(bool(torch.isfinite(x)) for x in losses)}


def time_update_alone(stepper: Stage2Step, reps: int = 3) -> float:
    """Seconds of clip + AdamW + EMA alone (gradients present), median of `reps`."""
    stepper.forward_backward(stepper.inputs(1))
    grads = [p.grad.clone() for p in stepper.params]
    out = []
    for _ in range(reps):
        for p, g in zip(stepper.params, grads):
            p.grad = g.clone()
        sync(stepper.device)
        t = time.perf_counter()
        stepper.update()
        sync(stepper.device)
        out.append(time.perf_counter() - t)
    del grads
    free_memory(stepper.device)
    return statistics.median(out)


def section_training(args, rep: Report, clock: Clock) -> None:
    device = args.device
    full = not args.smoke
    deadline = clock.deadline(args.box_training)
    t_build = time.perf_counter()
    unet, inflation, frames = build_stage2_unet("full" if full else "tiny", device)
    latent_hw, tokens = ((32, 48), 77) if full else ((8, 12), 7)
    processors = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    n_params = sum(p.numel() for p in unet.parameters())
    sec = rep.section(
        "training", "Section 1: stage-II training steps",
        model=(f"UNetSpatioTemporalConditionModel inflated from the {'SD 2.1-sized' if full else 'tiny'} image UNet "
               f"(svd_dag.training.unets): {n_params / 1e6:.1f}M params ({inflation.new_params / 1e6:.1f}M new)"),
        shape=f"{frames} frames, latents 4 x {latent_hw[0]}x{latent_hw[1]}{' (256x384 px)' if full else ''}, "
              f"text [B, {tokens}, {unet.config.cross_attention_dim}] random, added_time_ids [fps-1=7, 127, 0.0]",
        precision="bf16 autocast, fp32 master weights (accelerate mixed_precision='bf16' does the same)",
        step="EDM v-form loss (svd_dag.training.edm, ln s ~ N(-1.2, 1.0)) -> backward -> clip_grad_norm 1.0 -> "
             "AdamW (torch default: foreach on CUDA) -> diffusers EMAModel.step (on the device)",
        attention=f"diffusers processors {processors} (AttnProcessor2_0 = torch SDPA)",
        sdpa_backends=(f"flash {torch.backends.cuda.flash_sdp_enabled()}, mem-efficient "
                       f"{torch.backends.cuda.mem_efficient_sdp_enabled()}, cudnn {torch.backends.cuda.cudnn_sdp_enabled()}"
                       if device.startswith("cuda") else "n/a (cpu)"),
        peak_used=(f"{PEAK_BF16_TFLOPS:g} TFLOP/s dense bf16 (H100/H200 SXM spec figure)"
                   if device.startswith("cuda") else "n/a (cpu)"),
        flop_counting=("torch.utils.flop_counter.FlopCounterMode over one forward+backward at batch 1 with "
                       "checkpointing OFF (model FLOPs), scaled linearly by the batch; the recomputation under "
                       "checkpointing is not useful work: MFU uses model FLOPs, HFU adds the recomputed forward "
                       "(counted the same way with checkpointing ON); optimizer/EMA arithmetic is not counted"),
    )
    stepper = Stage2Step(unet, device, frames, latent_hw, tokens, fake_oom_above=2 if args.smoke else None)
    rep.note(sec, "build_s", round(time.perf_counter() - t_build, 1))

    stepper.try_step(1)  # first step: optimizer state, kernels, allocator
    model_flops = count_flops(stepper, 1)
    unet.enable_gradient_checkpointing()
    hw_flops = count_flops(stepper, 1)
    unet.disable_gradient_checkpointing()
    rep.note(sec, "flops_per_sample", {"model_tflop": model_flops / 1e12, "with_recompute_tflop": hw_flops / 1e12},
             f"- counted FLOPs per sample (forward+backward): model {model_flops / 1e12:.4g} TFLOP, "
             f"with checkpointing's recompute {hw_flops / 1e12:.4g} TFLOP ({hw_flops / max(model_flops, 1):.2f}x)")
    update_s = time_update_alone(stepper)
    rep.note(sec, "update_alone_s", update_s,
             f"- clip + AdamW + EMA alone: {update_s * 1e3:.1f} ms per step (independent of the batch)")

    say("\n| checkpointing | batch | s/step (median) | n | samples/s | peak alloc GiB | peak reserved GiB "
        "| model TFLOP/step | model TFLOP/s | MFU | HFU |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    peak_tflops = PEAK_BF16_TFLOPS if device.startswith("cuda") else None
    cap = args.max_batch if not args.smoke else 8
    results: dict[str, Any] = {}
    for ckpt in (True, False):
        mode = "on" if ckpt else "off"
        (unet.enable_gradient_checkpointing if ckpt else unet.disable_gradient_checkpointing)()
        sub_deadline = min(deadline, time.monotonic() + (args.box_training_on if ckpt else 1e9))
        # OOM search, powers of two; each probe is one step (the first at a size), time-boxed.
        probes, best, last = [], None, None
        b = 1
        while b <= cap:
            if last is not None:
                est = last[1] * (b / last[0]) * 1.3
                if time.monotonic() + est * (1 + args.warmup + args.steps_min) > sub_deadline:
                    probes.append({"batch": b, "fits": None, "note": "not tried: time box"})
                    break
            reset_peak(device)
            t = time.perf_counter()
            fits, message = stepper.try_step(b)
            seconds = time.perf_counter() - t
            alloc, reserved = peaks(device)
            probes.append({"batch": b, "fits": fits, "s": round(seconds, 3), "peak_alloc_gib": alloc,
                           "peak_reserved_gib": reserved, **({"error": message} if message else {})})
            say(f"  probe checkpointing {mode} batch {b}: {'fits' if fits else 'OOM'} ({seconds:.2f} s"
                f"{', peak reserved ' + fmt(reserved, '.1f') + ' GiB' if fits else ''}){' ' + message if message else ''}")
            if not fits:
                break
            best, last = b, (b, seconds)
            b *= 2
        if b > cap and best == cap:
            probes.append({"batch": b, "fits": None, "note": f"not tried: cap {cap} (--max-batch)"})
        under_80 = [p["batch"] for p in probes if p.get("fits") and not (p["peak_reserved_gib"] > FIT_80GB_GIB)]
        results[mode] = {"max_batch": best, "probes": probes,
                         "max_batch_under_80gb": max(under_80) if under_80 and device.startswith("cuda") else None}
        rep.note(sec, f"oom_search_checkpointing_{mode}", results[mode],
                 f"- checkpointing {mode}: largest micro-batch that fits here: {best} "
                 f"(peak reserved <= {FIT_80GB_GIB:g} GiB, i.e. an 80 GB card: "
                 f"{results[mode]['max_batch_under_80gb'] if device.startswith('cuda') else 'n/a (cpu)'})")
        for batch in sorted({1, best or 1}):
            if time.monotonic() > sub_deadline and batch != 1:
                say(f"  (checkpointing {mode} batch {batch}: not timed, time box)")
                continue
            m = None
            while m is None and batch >= 1:
                try:
                    m = time_steps(stepper, batch, args.warmup, args.steps_max, args.steps_min, sub_deadline)
                except Exception as exc:  # noqa: BLE001 - a batch that fitted once can still OOM (fragmentation)
                    if not is_oom(exc):
                        raise
                    note = f"checkpointing {mode} batch {batch}: OOM while timing ({str(exc).splitlines()[0][:120]})"
                if m is None:  # out of the except block: its frames' tensors are gone
                    stepper.opt.zero_grad(set_to_none=True)
                    free_memory(device)
                    say(f"  {note}; timing batch {batch // 2} instead")
                    results[mode].setdefault("timing_oom", []).append(note)
                    batch //= 2
            if m is None:
                continue
            flops_step = model_flops * batch
            tflops = flops_step / m["median_s"] / 1e12
            mfu = tflops / peak_tflops if peak_tflops else None
            hfu = (hw_flops if ckpt else model_flops) * batch / m["median_s"] / 1e12 / peak_tflops if peak_tflops else None
            row = {"checkpointing": ckpt, "batch": batch, "s_per_step": m["median_s"], "n": len(m["times"]),
                   "all_s": m["times"], "samples_per_s": batch / m["median_s"], "peak_alloc_gib": m["peak_alloc_gib"],
                   "peak_reserved_gib": m["peak_reserved_gib"], "model_tflop_per_step": flops_step / 1e12,
                   "model_tflops": tflops, "mfu": mfu, "hfu": hfu, "loss_finite": m["loss_finite"]}
            rep.row(sec, row, f"| {mode} | {batch} | {m['median_s']:.4f} | {len(m['times'])} | {batch / m['median_s']:.2f} "
                              f"| {fmt(m['peak_alloc_gib'], '.1f')} | {fmt(m['peak_reserved_gib'], '.1f')} "
                              f"| {flops_step / 1e12:.4g} | {tflops:.4g} | {fmt(mfu and mfu * 100, '.1f')}% "
                              f"| {fmt(hfu and hfu * 100, '.1f')}% |")
    rows = sec["rows"]
    b1 = next((r for r in rows if r["checkpointing"] and r["batch"] == 1), None)
    if device.startswith("cuda") and b1:
        rep.target("stage-II step, batch 1, checkpointing on, fits in 80 GB",
                   f"peak reserved {b1['peak_reserved_gib']:.1f} GiB (allocated {b1['peak_alloc_gib']:.1f})",
                   f"<= {FIT_80GB_GIB:g} GiB reserved", b1["peak_reserved_gib"] <= FIT_80GB_GIB)
        best_row = max(rows, key=lambda r: r["mfu"] or 0)
        rep.target("MFU >= 40%", f"{best_row['mfu'] * 100:.1f}% (checkpointing {'on' if best_row['checkpointing'] else 'off'},"
                                 f" batch {best_row['batch']}, vs {PEAK_BF16_TFLOPS:g} TFLOP/s)",
                   ">= 40%", best_row["mfu"] >= MFU_TARGET)
    else:
        why = "n/a (cpu smoke)" if not device.startswith("cuda") else "not measured (no batch-1 row)"
        rep.target("stage-II step, batch 1, checkpointing on, fits in 80 GB", why, f"<= {FIT_80GB_GIB:g} GiB", None)
        rep.target("MFU >= 40%", why, ">= 40%", None)
    sec["status"] = "ok"
    rep.save()
    del stepper, unet
    free_memory(device)


# ------------------------------------------------------------------------------ section 3


def build_i2v_modules(size: str, device: str, dtype: torch.dtype):
    """SVD-I2V-shaped UNet (8 input channels), SVD's VAE, a ViT-H/14 CLIP vision tower (or tiny ones)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from svd_dag.training import unets
    from svd_dag.training.components import TINY_VAE_CONFIG
    from svd_dag.training.conditioning_frames import CLIP_MEAN, CLIP_STD, ImageEncoder, tiny_vision_config

    torch.manual_seed(0)
    with torch.device(device):
        if size == "full":
            cfg = unets.video_unet_config_from_image(unets.full_image_unet_config(), num_frames=14, in_channels=8)
            unet = unets.build_video_unet(cfg)
            vae = AutoencoderKLTemporalDecoder(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                               down_block_types=["DownEncoderBlock2D"] * 4, latent_channels=4)
            vision = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                                      patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")
        else:
            image_cfg = unets.tiny_image_unet_config(cross_attention_dim=32, sample_size=8)
            unet = unets.build_video_unet(unets.video_unet_config_from_image(
                image_cfg, num_frames=4, in_channels=8, addition_time_embed_dim=unets.TINY_ADDITION_TIME_EMBED_DIM))
            vae = AutoencoderKLTemporalDecoder(**TINY_VAE_CONFIG)
            vision = CLIPVisionConfig(**tiny_vision_config(32))
        clip = CLIPVisionModelWithProjection(vision)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                   image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    for m in (unet, vae, clip):
        m.to(device, dtype).eval().requires_grad_(False)
    return unet, vae, ImageEncoder(clip, processor, "random", "random-init")


def section_sampler(args, rep: Report, clock: Clock) -> None:
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from PIL import Image

    from svd_dag.sampling.euler import SVD_SCHEDULER_CONFIG, Guidance
    from svd_dag.sampling.generate import VideoModel, generate

    device = args.device
    full = not args.smoke
    deadline = clock.deadline(args.box_sampler)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    frames, height, width = (14, 576, 1024) if full else (4, 32, 48)
    steps = args.sampler_steps if full else 3
    seed, chunk = 0, 8
    t_build = time.perf_counter()
    unet, vae, encoder = build_i2v_modules("full" if full else "tiny", device, dtype)
    n = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in (("unet", unet), ("vae", vae), ("clip", encoder.model))}
    sec = rep.section(
        "sampler", "Section 3: I2V sampler, ours vs diffusers' StableVideoDiffusionPipeline",
        models=(f"UNet {n['unet']:.1f}M (SVD-I2V shape, 8 input channels), VAE {n['vae']:.1f}M (temporal decoder), "
                f"CLIP vision {n['clip']:.1f}M ({'ViT-H/14' if full else 'tiny'}), one set of modules shared by both samplers"),
        setting=(f"{frames} x {height}x{width}, {steps} Euler steps, guidance 1.0 -> 3.0 over the frames, fps 7, "
                 f"motion bucket 127, noise aug 0.02, decode chunk {chunk}, {str(dtype).removeprefix('torch.')}, "
                 f"same image, initial latents (seed {seed}) and conditioning noise (seed {seed + 1})"),
        attention=str(sorted({type(p).__name__ for p in unet.attn_processors.values()})),
        timing="seconds per video from the call to the uint8/np frames on the host, torch.cuda.synchronize around "
               "it; one warm-up call of each with 2 steps first; round-robin; median",
    )
    rep.note(sec, "build_s", round(time.perf_counter() - t_build, 1))
    model = VideoModel(folder="(in memory)", task="i2v", unet=unet, vae=vae, encoder=encoder, meta={"config": {}})
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder.model, unet=unet, feature_extractor=encoder.processor,
                                        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG))
    pipe.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    shape = (1, frames, 4, height // model.vae_scale, width // model.vae_scale)

    def ours(k: int) -> np.ndarray:
        return generate(model, [image], num_frames=frames, height=height, width=width, steps=k,
                        guidance=Guidance(1.0, 3.0), seed=seed, fps=7, motion_bucket=127, noise_aug_strength=0.02,
                        decode_chunk_size=chunk, device=device)

    def theirs(k: int) -> np.ndarray:
        # sample_euler draws randn(shape) from a CPU generator seeded `seed` and scales it by
        # sqrt(1 + sigma_max^2); the pipeline scales the latents it is given by init_noise_sigma, the
        # same number. Our conditioning noise is the first draw of a CPU generator seeded seed + 1,
        # as is the pipeline's when it is given that generator and the latents.
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        out = pipe(Image.fromarray(image), height=height, width=width, num_frames=frames, num_inference_steps=k,
                   min_guidance_scale=1.0, max_guidance_scale=3.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
                   decode_chunk_size=chunk, generator=torch.Generator().manual_seed(seed + 1),
                   latents=latents.to(device, dtype), output_type="np").frames[0]
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)

    runners: dict[str, Callable[[int], np.ndarray]] = {"ours": ours, "diffusers": theirs}
    for name, fn in runners.items():  # warm-up: kernels, cuDNN/cuBLAS handles, allocator
        t = time.perf_counter()
        fn(2)
        sync(device)
        say(f"  warm-up {name} (2 steps): {time.perf_counter() - t:.1f} s")

    # UNet FLOPs of one guided step (uncond + cond in one batch of 2), counted once.
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        x = torch.randn((2, *shape[1:2], 8, *shape[3:]), device=device, dtype=dtype)
        unet(x, torch.zeros(2, device=device, dtype=dtype), encoder_hidden_states=torch.randn(2, 1, unet.config.cross_attention_dim,
             device=device, dtype=dtype), added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * 2, device=device, dtype=dtype))
    del x
    unet_flops_video = counter.get_total_flops() * steps
    rep.note(sec, "unet_tflop_per_video", unet_flops_video / 1e12,
             f"- UNet FLOPs per video (FlopCounterMode, {steps} guided steps at batch 2): {unet_flops_video / 1e12:.4g} TFLOP")

    say("\n| sampler | run | s/video | peak alloc GiB | peak reserved GiB | UNet TFLOP/s over the whole call |")
    say("|---|---:|---:|---:|---:|---:|")
    outputs: dict[str, np.ndarray] = {}
    timed: dict[str, list[float]] = {"ours": [], "diffusers": []}
    peak: dict[str, float] = {"ours": 0.0, "diffusers": 0.0}
    for rnd in range(args.sampler_repeats if full else 2):
        if rnd > 0 and timed["ours"]:
            per_round = sum(v[-1] for v in timed.values())
            if time.monotonic() + per_round > deadline:
                say(f"  (round {rnd + 1}: not run, time box)")
                break
        for name, fn in runners.items():
            free_memory(device)
            reset_peak(device)
            sync(device)
            t = time.perf_counter()
            out = fn(steps)
            sync(device)
            seconds = time.perf_counter() - t
            alloc, reserved = peaks(device)
            outputs.setdefault(name, out)
            timed[name].append(seconds)
            peak[name] = max(peak[name], alloc) if not math.isnan(alloc) else alloc
            rep.row(sec, {"sampler": name, "round": rnd + 1, "s_per_video": seconds, "peak_alloc_gib": alloc,
                          "peak_reserved_gib": reserved, "unet_tflops": unet_flops_video / seconds / 1e12},
                    f"| {name} | {rnd + 1} | {seconds:.3f} | {fmt(alloc, '.2f')} | {fmt(reserved, '.2f')} "
                    f"| {unet_flops_video / seconds / 1e12:.4g} |")
    diff = np.abs(outputs["ours"].astype(np.int16) - outputs["diffusers"].astype(np.int16))
    med = {k: statistics.median(v) for k, v in timed.items()}
    speedup = med["diffusers"] / med["ours"]
    summary = {"s_per_video_median": med, "speedup_ours_vs_diffusers": speedup, "max_abs_pixel_diff": int(diff.max()),
               "mean_abs_pixel_diff": float(diff.mean()), "pixels_over_2_levels": float((diff > 2).mean()),
               "peak_alloc_gib": peak, "shape": list(outputs["ours"].shape),
               "finite_and_varied": bool(outputs["ours"].std() > 0)}
    rep.note(sec, "summary", summary,
             f"- median s/video: ours {med['ours']:.3f}, diffusers {med['diffusers']:.3f} -> ours is {speedup:.2f}x as fast; "
             f"max |pixel difference| {int(diff.max())}/255, mean {diff.mean():.3f}/255, "
             f"{(diff > 2).mean() * 100:.2f}% of values differ by more than 2/255")
    equal = int(diff.max()) <= EQUAL_OUTPUT_MAX_LEVELS
    rep.target("our sampler >= 1.3x faster than diffusers at equal output", f"{speedup:.2f}x, max |diff| {int(diff.max())}/255",
               f">= {SAMPLER_SPEEDUP_TARGET}x with max |diff| <= {EQUAL_OUTPUT_MAX_LEVELS}/255",
               (speedup >= SAMPLER_SPEEDUP_TARGET and equal) if full else None,
               "" if full else "cpu smoke: not a measurement")
    if device.startswith("cuda"):
        rep.target("our sampler peak memory < 24 GB", f"{peak['ours']:.2f} GiB allocated", f"< {SAMPLER_PEAK_TARGET_GIB:.2f} GiB (24e9 B)",
                   peak["ours"] < SAMPLER_PEAK_TARGET_GIB)
    else:
        rep.target("our sampler peak memory < 24 GB", "n/a (cpu smoke)", "< 24e9 B", None)
    sec["status"] = "ok"
    rep.save()
    pipe = model = unet = vae = encoder = None  # free the device for the next section
    free_memory(device)


# ------------------------------------------------------------------------------ section 2


def write_moving_video(path: str, width: int, height: int, n_frames: int, fps: int = 24) -> str:
    """An H.264 mp4 of a smooth random texture panning right (PyAV's libx264)."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(0, 256, (height // 8 + 1, (width + n_frames * 4) // 8 + 1, 3), dtype=np.uint8),
                     (width + n_frames * 4, height), interpolation=cv2.INTER_CUBIC)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[:, i * 4 : i * 4 + width]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def resume_unet_config(size: str) -> dict[str, Any]:
    from svd_dag.training import unets

    if size == "tiny":
        return unets.video_unet_config_from_image(unets.tiny_image_unet_config(cross_attention_dim=32, sample_size=8),
                                                  num_frames=4, addition_time_embed_dim=unets.TINY_ADDITION_TIME_EMBED_DIM)
    image = unets.full_image_unet_config()
    if size == "half":
        image = {**image, "block_out_channels": (160, 320, 640, 640)}  # 32 channels per head, as at full size
    return unets.video_unet_config_from_image(image, num_frames=14)


def find_saved_states(state_dir: str) -> list[tuple[int, str]]:
    """Complete resumable states under state_dir: folders `step-<N>` holding `.complete`, at most
    three levels down. That is the trainer's layout before and after the resume-state refactor
    (`state_dir/step-N/`, now `state_dir/states/step-N/` when state_uri is empty), read off the
    disk rather than through the trainer's own helpers, which are being moved."""
    found = []
    for pattern in ("step-*", "*/step-*", "*/*/step-*"):
        for path in Path(state_dir).glob(pattern):
            m = re.fullmatch(r"step-(\d+)", path.name)
            if m and path.is_dir() and (path / ".complete").exists():
                found.append((int(m.group(1)), str(path)))
    return sorted(found)


def dir_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def parse_result(log_text: str) -> dict[str, Any] | None:
    """The JSON `train.main` logs as 'result {...}' when a run ends."""
    for line in reversed(log_text.splitlines()):
        m = re.search(r"\bresult (\{.*\})\s*$", line)
        if m:
            try:
                return json.loads(m.group(1))
            except json.JSONDecodeError:
                continue
    return None


def tail(text: str, n: int = 25) -> str:
    return "\n".join(text.splitlines()[-n:])


def section_resume(args, rep: Report, clock: Clock) -> None:
    full = not args.smoke
    deadline = clock.deadline(max(30.0, clock.left() - 5.0))
    missing = []
    for mod in ("av", "dagster_pipes", "pyarrow"):
        try:
            __import__(mod)
        except ImportError as exc:
            missing.append(f"{mod} ({exc})")
    size = args.resume_unet if full else "tiny"
    steps, every = (args.resume_steps, args.resume_steps // 2) if full else (12, 6)
    frames, height, width = (14, 256, 384) if full else (4, 32, 48)
    sec = rep.section(
        "resume", "Section 2: a training run killed after its first saved state, then resumed",
        entry_point="python -m svd_dag.training.train --config run.json (the project's entry point, unchanged), "
                    "task i2v (no text encoder needed), Dagster Pipes absent (dagster_pipes hands back its no-op context)",
        run=f"{steps} steps, resumable state every {every} steps, micro-batch {args.resume_batch if full else 2}, "
            f"{frames} x {height}x{width}, EMA (diffusers EMAModel, decay 0.9999, on the training device), "
            f"{'bf16 mixed precision, gradient checkpointing' if full else 'fp32 (cpu)'}, dataloader workers "
            f"{2 if full else 1}, sample rendering off (sample_count 0)",
        unet=size + (" (the full architecture at half width: a full-size state is ~24 GB, see the header)" if size == "half" else ""),
    )
    if missing:
        sec["status"] = "skipped"
        rep.note(sec, "missing", missing, f"- SKIPPED: cannot import {', '.join(missing)}: carry their wheels "
                                          "(see benchmarks/gpu_training.sh)")
        return
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from svd_dag.training.components import TINY_VAE_CONFIG
    from svd_dag.training.config import TrainConfig

    work = tempfile.mkdtemp(prefix="svd_dag_resume_", dir=args.work_dir)
    try:
        ucfg = resume_unet_config(size)
        with torch.device("meta"):
            n_params = sum(p.numel() for p in UNetSpatioTemporalConditionModel.from_config(ucfg).parameters())
        state_gb = n_params * 16 / 1e9  # fp32 weights + AdamW (2x) + EMA, each 4 B per parameter
        need_gb = 2 * state_gb + 5 * n_params * 4 / 1e9 + 2  # two kept states; parent, final raw+EMA, their copy
        free_gb = shutil.disk_usage(work).free / 1e9
        rep.note(sec, "disk", {"params": n_params, "state_gb_est": state_gb, "need_gb_est": need_gb, "free_gb": free_gb},
                 f"- UNet {n_params / 1e6:.1f}M params: ~{state_gb:.1f} GB per resumable state, ~{need_gb:.0f} GB of disk "
                 f"needed, {free_gb:.0f} GB free under {work}")
        if need_gb > free_gb:
            raise RuntimeError(f"not enough disk under {work}: ~{need_gb:.0f} GB needed, {free_gb:.0f} GB free "
                               "(use --resume-unet half or --work-dir elsewhere)")
        # The parent checkpoint: a stage-II-shaped video UNet (4 input channels; the trainer widens conv_in
        # to 8 for I2V, as after the real stage II) and a VAE, random init, in diffusers layout.
        t = time.perf_counter()
        parent = os.path.join(work, "parent")
        torch.manual_seed(0)
        UNetSpatioTemporalConditionModel.from_config(ucfg).save_pretrained(os.path.join(parent, "unet"))
        vae_cfg = (dict(TINY_VAE_CONFIG) if size == "tiny" else
                   dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        latent_channels=4, layers_per_block=2))
        AutoencoderKLTemporalDecoder(**vae_cfg).save_pretrained(os.path.join(parent, "vae"))
        with open(os.path.join(parent, "svd_dag_training.json"), "w") as f:
            json.dump({"task": "text", "vae_weights": "random", "weights_digest": "benchmark-random-init",
                       "note": "gpu_training.py: random-init parent"}, f)
        # Clips: one synthetic video, 24 fps, cut into three clips; a manifest row per clip.
        import pyarrow as pa
        import pyarrow.parquet as pq

        n_video = 144 if full else 48
        video = write_moving_video(os.path.join(work, "pan.mp4"), width + width // 4, height + height // 4, n_video)
        third = n_video // 3
        rows = [{"clip_id": f"pan{i}", "video_uri": video, "start_frame": i * third, "end_frame": (i + 1) * third,
                 "fps": 24.0, "motion_score": 8.0, "caption": "a panning texture"} for i in range(3)]
        manifest = os.path.join(work, "manifest.parquet")
        pq.write_table(pa.Table.from_pylist(rows), manifest)
        fields = dict(
            stage="video", profile="full" if full else "tiny", task="i2v", manifest_uri=manifest,
            output_uri=os.path.join(work, "out", "i2v"), state_dir=os.path.join(work, "state"), init_from=parent,
            steps=steps, checkpoint_every=every, batch_size=args.resume_batch if full else 2, num_frames=frames,
            height=height, width=width, target_fps=8.0, learning_rate=3e-5, p_mean=0.7, p_std=1.6,
            ema_max_decay=0.9999, mixed_precision="bf16" if full else "no", gradient_checkpointing=full,
            dataloader_workers=2 if full else 1, sample_count=0, seed=0)
        TrainConfig(**fields).validate()  # only fields the config has now (an added optional state_uri is not needed)
        cfg_path = os.path.join(work, "run.json")
        with open(cfg_path, "w") as f:
            json.dump(fields, f)
        rep.note(sec, "prepare_s", round(time.perf_counter() - t, 1),
                 f"- parent checkpoint, synthetic clips and run.json written in {time.perf_counter() - t:.1f} s")

        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "svd_dag.training.train", "--config", cfg_path]
        logs = [os.path.join(work, f"run{i}.log") for i in (1, 2)]

        # Run 1: killed (SIGKILL, whole process group: the trainer and its loader workers) once a state is complete.
        t1 = time.monotonic()
        with open(logs[0], "w") as log:
            child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        saved = None
        try:
            while time.monotonic() < deadline and child.poll() is None:
                states = find_saved_states(fields["state_dir"])
                if states:
                    saved = states[0]
                    break
                time.sleep(0.05)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            rc1 = child.wait(60)
        first_s = time.monotonic() - t1
        text1 = open(logs[0]).read()
        if saved is None:
            why = ("time box reached" if rc1 == -signal.SIGKILL else f"run 1 exited (rc {rc1}) before a complete state appeared")
            raise RuntimeError(f"no resumable state seen under {fields['state_dir']} ({why}); log tail:\n{tail(text1)}")
        killed_after = [s for s, _ in find_saved_states(fields["state_dir"])]
        rep.note(sec, "run1", {"saved_step": saved[0], "states_after_kill": killed_after, "rc": rc1, "seconds": first_s,
                               "state_bytes": dir_bytes(saved[1])},
                 f"- run 1: first complete state at step {saved[0]} after {first_s:.1f} s "
                 f"({dir_bytes(saved[1]) / 1e9:.2f} GB on disk); killed (rc {rc1}); states present after the kill: {killed_after}")
        if rc1 == 0:
            raise RuntimeError("run 1 finished before it was killed: the kill did not land mid-run")

        # Run 2: the same command resumes from the newest complete state and finishes.
        t2 = time.monotonic()
        with open(logs[1], "w") as log:
            child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc2 = child.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(60)
            rc2 = "killed: time box"
        second_s = time.monotonic() - t2
        text2 = open(logs[1]).read()
        if args.out_dir:
            for i, path in enumerate(logs, 1):
                shutil.copy(path, os.path.join(args.out_dir, f"gpu_training_resume_run{i}.log"))
        result = parse_result(text2)
        if rc2 != 0 or result is None:
            raise RuntimeError(f"run 2 failed (rc {rc2}); log tail:\n{tail(text2)}")
        resumed, final = result.get("resumed_from"), result.get("steps")
        # EMA vs raw weights of the final checkpoint (I2V layout: unet/ = EMA, unet_raw/ = raw).
        from safetensors.torch import load_file

        ckpt = result.get("checkpoint_uri", "")
        ema_sd = load_file(os.path.join(ckpt, "unet", "diffusion_pytorch_model.safetensors"))
        raw_sd = load_file(os.path.join(ckpt, "unet_raw", "diffusion_pytorch_model.safetensors"))
        finite = all(torch.isfinite(v).all() for v in ema_sd.values())
        ema_gap = max(float((ema_sd[k].float() - raw_sd[k].float()).abs().max()) for k in raw_sd)
        del ema_sd, raw_sd
        ok = resumed == saved[0] and final == steps and finite and ema_gap > 0
        row = {"saved_step": saved[0], "resumed_step": resumed, "final_step": final, "steps_wanted": steps,
               "run1_s": first_s, "run2_s": second_s, "wall_time_s_in_run2": result.get("wall_time_s"),
               "ema_finite": finite, "ema_minus_raw_max_abs": ema_gap, "first_loss": result.get("first_loss"),
               "final_loss": result.get("final_loss"), "global_batch": result.get("global_batch"), "ok": ok}
        say("\n| saved step | resumed step | final step | run 1 s (to first state) | run 2 s | EMA finite | max abs EMA - raw | ok |")
        say("|---:|---:|---:|---:|---:|---|---:|---|")
        rep.row(sec, row, f"| {saved[0]} | {resumed} | {final} (of {steps}) | {first_s:.1f} | {second_s:.1f} | {finite} "
                          f"| {ema_gap:.3g} | {'yes' if ok else 'NO'} |")
        say(f"- saved step {saved[0]}, resumed step {resumed}, final step {final}: "
            f"{'final step is ' + str(steps) if final == steps else 'final step is NOT ' + str(steps)}")
        if not ok:
            raise RuntimeError(f"resume check failed: {row}")
        sec["status"] = "ok"
        rep.save()
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------ main


def environment(device: str) -> dict[str, Any]:
    import diffusers

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                           "device": device, "cpus": os.cpu_count()}
    for name in ("transformers", "accelerate"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    env["cudnn_benchmark"] = torch.backends.cudnn.benchmark  # left as the trainer leaves it
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1), sms=props.multi_processor_count,
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return env


def recap(rep: Report) -> None:
    """The measured rows again, short, at the end of the output (what a truncated log tail keeps)."""
    secs = rep.data["sections"]
    rows = secs.get("training", {}).get("rows", [])
    if rows:
        say("| 1: checkpointing | batch | s/step | samples/s | peak reserved GiB | MFU | HFU |")
        say("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            say(f"| {'on' if r['checkpointing'] else 'off'} | {r['batch']} | {r['s_per_step']:.4f} | {r['samples_per_s']:.2f} "
                f"| {fmt(r['peak_reserved_gib'], '.1f')} | {fmt(r['mfu'] and r['mfu'] * 100, '.1f')}% "
                f"| {fmt(r['hfu'] and r['hfu'] * 100, '.1f')}% |")
    for mode in ("on", "off"):
        search = secs.get("training", {}).get(f"oom_search_checkpointing_{mode}")
        if search:
            say(f"- 1: checkpointing {mode}: largest micro-batch {search['max_batch']} here, "
                f"{search['max_batch_under_80gb'] if search['max_batch_under_80gb'] is not None else 'n/a'} within an 80 GB card")
    summary = secs.get("sampler", {}).get("summary")
    if summary:
        med, pk = summary["s_per_video_median"], summary["peak_alloc_gib"]
        say(f"- 3: s/video ours {med['ours']:.3f} (peak {fmt(pk['ours'], '.2f')} GiB), diffusers {med['diffusers']:.3f} "
            f"(peak {fmt(pk['diffusers'], '.2f')} GiB): {summary['speedup_ours_vs_diffusers']:.2f}x; max |pixel diff| "
            f"{summary['max_abs_pixel_diff']}/255, mean {summary['mean_abs_pixel_diff']:.3f}/255")
    for r in secs.get("resume", {}).get("rows", []):
        say(f"- 2: saved step {r['saved_step']}, resumed step {r['resumed_step']}, final step {r['final_step']} "
            f"(of {r['steps_wanted']}); EMA finite {r['ema_finite']}, max |EMA - raw| {r['ema_minus_raw_max_abs']:.3g}")


SECTIONS = {"1": ("training", section_training), "3": ("sampler", section_sampler), "2": ("resume", section_resume)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny configs, a couple of steps (every code path)")
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    ap.add_argument("--sections", default="1,3,2", help="which sections, in this order (default 1,3,2)")
    ap.add_argument("--json", default=None, help="JSON results (default: $OUT/gpu_training.json when $OUT is set)")
    ap.add_argument("--budget-s", type=float, default=400.0, help="the whole run's time box (default 400)")
    ap.add_argument("--box-training", type=float, default=160.0, help="section 1's time box (s)")
    ap.add_argument("--box-training-on", type=float, default=100.0, help="of which checkpointing-on search + timing (s)")
    ap.add_argument("--box-sampler", type=float, default=100.0, help="section 3's time box (s)")
    ap.add_argument("--max-batch", type=int, default=128, help="section 1: largest micro-batch tried")
    ap.add_argument("--warmup", type=int, default=2, help="section 1: warm-up steps before timing")
    ap.add_argument("--steps-min", type=int, default=3, help="section 1: timed steps at least")
    ap.add_argument("--steps-max", type=int, default=6, help="section 1: timed steps at most (time box permitting)")
    ap.add_argument("--sampler-steps", type=int, default=25)
    ap.add_argument("--sampler-repeats", type=int, default=2, help="section 3: rounds (time box permitting)")
    ap.add_argument("--resume-unet", choices=("half", "full"), default="half", help="section 2's UNet")
    ap.add_argument("--resume-steps", type=int, default=30)
    ap.add_argument("--resume-batch", type=int, default=1)
    ap.add_argument("--work-dir", default=None, help="section 2's scratch folder (default: the system temp dir)")
    ap.add_argument("--keep-work", action="store_true", help="keep section 2's scratch folder")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    args.out_dir = os.environ.get("OUT") or None
    json_path = args.json or (os.path.join(args.out_dir, "gpu_training.json") if args.out_dir else None)
    if not args.smoke and not args.device.startswith("cuda"):
        say("no CUDA device: the full-size run needs one (use --smoke on a CPU)")
        return 2
    clock = Clock(args.budget_s)
    env = environment(args.device)
    say(f"# GPU training benchmark ({'CPU smoke, tiny configs' if args.smoke else 'full size'}; {WEIGHTS})")
    say("- " + ", ".join(f"{k} {v}" for k, v in env.items()))
    rep = Report(json_path, {"mode": "smoke" if args.smoke else "gpu", "environment": env,
                             "peak_bf16_tflops_used": PEAK_BF16_TFLOPS, "argv": sys.argv[1:]})
    if args.device.startswith("cuda"):
        ceiling = matmul_ceiling(args.device)
        rep.data["ceiling"] = ceiling
        rep.save()
        say(f"- measured ceiling: {ceiling['bf16_matmul_tflops']} TFLOP/s ({ceiling['how']}); MFU below uses the "
            f"{PEAK_BF16_TFLOPS:g} TFLOP/s spec figure")
    failed = []
    for key in [s.strip() for s in args.sections.split(",") if s.strip()]:
        name, fn = SECTIONS[key]
        if clock.left() < 20:
            say(f"\n## section {key} ({name}): not run, the whole run's time box is spent")
            rep.data["sections"][name] = {"status": "not run (time box)"}
            rep.save()
            continue
        t = time.perf_counter()
        try:
            fn(args, rep, clock)
        except Exception as exc:  # noqa: BLE001 - report, free the device, go on with the next section
            failed.append(name)
            sec = rep.data["sections"].setdefault(name, {"rows": []})
            sec.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
            rep.save()
            say(f"\nSECTION {key} ({name}) FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            free_memory(args.device)
        rep.data["sections"][name]["seconds"] = round(time.perf_counter() - t, 1)
        rep.save()
    say(f"\n## Summary ({WEIGHTS}; {'CPU smoke: no GPU figure' if args.smoke else env.get('gpu')}; "
        f"{time.monotonic() - clock.start:.0f} s)")
    recap(rep)
    say("\n| target | value | need | verdict |")
    say("|---|---|---|---|")
    for t in rep.data["targets"]:
        say(f"| {t['target']} | {t['value']} | {t['threshold']} | {t['verdict']} |")
    for name, sec in rep.data["sections"].items():
        say(f"- section {name}: {sec.get('status')}" + (f" ({sec.get('error')})" if sec.get("error") else ""))
    rep.data["failed_sections"] = failed
    rep.data["total_s"] = round(time.monotonic() - clock.start, 1)
    rep.save()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
