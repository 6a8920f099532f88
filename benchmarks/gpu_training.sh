#!/usr/bin/env bash
# GPU training benchmark on the device machine (see benchmarks/gpu_training.py): stage-II training
# steps (checkpointing on/off, largest micro-batch, MFU), a killed-and-resumed run of the project's
# training entry point, and our I2V sampler against diffusers' pipeline. Random-init weights only.
# Budget: under 7 minutes on one H200 (the .py stops itself at --budget-s, default 400 s: section 1
# 160 s, section 3 100 s, section 2 what is left), so a 480 s device call leaves margin.
#
# The device machine has torch, transformers, accelerate, peft, opencv, timm, pyarrow, fsspec and
# (assumed from its package list, checked below before anything runs) huggingface_hub, safetensors,
# regex, requests, filelock, Pillow, numpy, click; not diffusers, PyAV or dagster-pipes, and
# nothing can be installed there from a registry. Those three travel as wheels in
# benchmarks/wheels/training/ (git-ignored through benchmarks/wheels/; name that folder in the
# run's `carry`), made here with:
#
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
#       -d benchmarks/wheels/training diffusers==0.42.1 dagster-pipes==1.13.27
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d benchmarks/wheels/training av==18.1.0
#
# (the versions of requirements/lock.txt; av's wheel is cp311-abi3 manylinux_2_28, ~36 MB, which is
# why it needs its own platform tag; the three come to ~40 MB, under the 64 MiB a call may carry).
# Why each is needed: diffusers for every section (the UNets, the VAE, EMAModel, the SVD pipeline;
# its own needs importlib_metadata (stdlib on 3.12), filelock, huggingface-hub>=1.32 (the device has
# 1.33), numpy, regex, requests, safetensors>=0.8, Pillow are there); av and dagster-pipes only
# for section 2 (svd_dag.training.data imports PyAV at module level, through
# svd_dag.curation.shards; train.main opens Dagster Pipes on the main process). The trainer does not
# import scenedetect. Without them section 2 is skipped and sections 1 and 3 still run.
#
# They sit in their own subfolder because benchmarks/wheels/ already holds the annotator wheels and
# CRAFT weights (45 MiB; gpu_annotators.sh installs every *.whl directly in it): carry only
# benchmarks/wheels/training here. Note that carrying benchmarks/wheels whole (the annotators'
# documented command) now also takes this subfolder, 45 + 41 MiB > 64 MiB: move it away first, or
# carry the annotator files by name.
#
# This script installs the wheels into $SITE_DIR (no index, no deps), puts it and the repo on
# PYTHONPATH, checks the imports, and runs the benchmark; extra arguments go to gpu_training.py
# (e.g. --sections 1,3). PYTHON, SITE_DIR and WHEELS may be overridden. Results: stdout (tables,
# printed as measured) and, when $OUT is set, $OUT/gpu_training.json (+ section 2's two run logs).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SITE_DIR=${SITE_DIR:-/tmp/svd_dag-training-site}
WHEELS=${WHEELS:-benchmarks/wheels/training}

source benchmarks/carried_wheels.sh
export HF_HUB_DISABLE_TELEMETRY=1
if command -v nvidia-smi >/dev/null; then  # a read-only query: the card is measured as found
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv || true
fi

"$PYTHON" - <<'EOF'
import importlib, sys
required = {  # every section
    "torch": "the device image", "diffusers": "a carried wheel (see the top of gpu_training.sh)",
    "transformers": "the device image", "accelerate": "the device image", "safetensors": "the device image",
    "huggingface_hub": "the device image (diffusers 0.42 needs >= 1.32)", "regex": "the device image",
    "requests": "the device image", "filelock": "the device image", "PIL": "the device image (Pillow)",
    "numpy": "the device image", "cv2": "the device image (opencv)",
}
section2 = {
    "av": "PyAV: the trainer decodes clips with it",
    "dagster_pipes": "train.main opens Dagster Pipes", "pyarrow": "manifests and clip usage", "fsspec": "svd_dag.storage",
}
bad, missing2 = [], []
for name, where in required.items():
    try:
        mod = importlib.import_module(name)
        print(f"  import {name} {getattr(mod, '__version__', '')} ({getattr(mod, '__file__', '')})")
    except Exception as exc:
        bad.append(f"{name}: {type(exc).__name__}: {exc} (expected from {where})")
for name, why in section2.items():
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing2.append(f"{name}: {type(exc).__name__}: {exc} ({why})")
try:
    import svd_dag.training.unets, svd_dag.sampling.generate  # noqa: F401
except Exception as exc:
    bad.append(f"svd_dag: {type(exc).__name__}: {exc}")
if missing2:
    print("WARNING: section 2 will be skipped, missing: " + "; ".join(missing2), file=sys.stderr)
if bad:
    print("ERROR: cannot run the GPU training benchmark, failed imports:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(3)
EOF

exec "$PYTHON" benchmarks/gpu_training.py "$@"
