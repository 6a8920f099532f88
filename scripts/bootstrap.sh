#!/usr/bin/env bash
# Creates .venv (if missing or stale) with the pinned stack. Safe to run repeatedly:
# a stamp holding the hash of the lock and pyproject skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.svd_dag-installed"
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
echo "[bootstrap] creating $venv with $($python --version)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# This machine's pip config names local indexes that may be absent; their warnings are noise.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# torch first, from the machine's local wheels (no multi-GB download); every other
# package then finds it satisfied.
quiet "${pip[@]}" install -q torch==2.14.1 torchvision==0.29.1
# Exact pins, no resolver: fast and repeatable. --no-deps also keeps scenedetect from
# pulling opencv-python, which would clobber opencv-python-headless's cv2/ (easyocr needs it).
quiet "${pip[@]}" install -q --no-deps -r requirements/lock.txt
quiet "${pip[@]}" install -q --no-deps -e .
echo "$want" > "$stamp"
echo "[bootstrap] ready: $venv"
