"""The GPU training benchmark's CPU smoke mode: every section of the device script runs here on tiny
configs, so a section that breaks is found before it costs device time.

`benchmarks/gpu_training.py --smoke` runs as a subprocess with this interpreter (the repo venv):
stage-II steps with checkpointing on and off, the micro-batch search through a simulated
OutOfMemoryError, FLOP counting; our I2V sampler against diffusers' pipeline on the same modules;
and the project's training entry point killed after its first saved state, then resumed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_training_smoke_runs_every_section(tmp_path):
    out = tmp_path / "gpu_training.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, "benchmarks/gpu_training.py", "--smoke", "--json", str(out),
                           "--work-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke" and data["weights"] == "random-init weights"
    sections = data["sections"]
    assert set(sections) == {"training", "sampler", "resume"}
    for name, sec in sections.items():
        assert sec["status"] == "ok", (name, sec.get("error"), sec.get("traceback"))
        assert sec["rows"], name
        assert all(r["weights"] == "random-init weights" for r in sec["rows"])

    # 1: both checkpointing modes at batch 1 and at the largest batch the (simulated) memory allows.
    train = sections["training"]
    got = {(r["checkpointing"], r["batch"]) for r in train["rows"]}
    assert got == {(True, 1), (True, 2), (False, 1), (False, 2)}
    for r in train["rows"]:
        assert r["s_per_step"] > 0 and math.isfinite(r["s_per_step"]) and r["loss_finite"]
        assert r["model_tflop_per_step"] > 0 and r["n"] >= 3
    flops = train["flops_per_sample"]
    assert flops["with_recompute_tflop"] > flops["model_tflop"] > 0  # checkpointing recomputes the forward
    for mode in ("on", "off"):
        search = train[f"oom_search_checkpointing_{mode}"]
        assert search["max_batch"] == 2
        assert [p["fits"] for p in search["probes"]] == [True, True, False]  # the OOM was caught and cleaned up

    # 3: the same frames from both samplers (fp32 on the CPU: within one level of rounding).
    sampler = sections["sampler"]
    assert {r["sampler"] for r in sampler["rows"]} == {"ours", "diffusers"}
    summary = sampler["summary"]
    assert summary["shape"] == [4, 32, 48, 3] and summary["finite_and_varied"]
    assert summary["max_abs_pixel_diff"] <= 1
    assert all(v > 0 for v in summary["s_per_video_median"].values())

    # 2: the killed run left a state mid-way; the second run resumed from exactly it and finished.
    (row,) = sections["resume"]["rows"]
    assert row["ok"] and 0 < row["saved_step"] < row["final_step"]
    assert row["resumed_step"] == row["saved_step"]
    assert row["final_step"] == row["steps_wanted"] == 12
    assert row["ema_finite"] and row["ema_minus_raw_max_abs"] > 0

    targets = {t["target"]: t for t in data["targets"]}
    assert len(targets) == 4 and all(t["verdict"] == "n/a" for t in targets.values())  # no GPU: nothing claimed
    for heading in ("Section 1: stage-II training steps", "Section 2: a training run killed", "Section 3: I2V sampler",
                    "| checkpointing | batch |", "| sampler | run |", "| saved step |", "## Summary"):
        assert heading in proc.stdout, heading
