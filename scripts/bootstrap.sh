#!/usr/bin/env bash
# Creates .venv (if missing or stale) with the pinned stack. Safe to run repeatedly:
# a stamp holding the hash of the lock and pyproject skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.svd_dag-installed"
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)
# The browser tests of the Dagster UI (tests/test_ui_browser.py) drive Debian's Chromium through
# Playwright (Playwright's own browser download needs the internet: never `playwright install`).
# Checked on every run, stamp or not, so a fresh machine always ends up with it.
# SVD_DAG_SKIP_BROWSER=1 skips this step (the browser tests then skip, saying so).
chromium=/usr/lib/chromium/chromium
if [ ! -x "$chromium" ] && [ "${SVD_DAG_SKIP_BROWSER:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo -n); fi
  if ! command -v apt-get >/dev/null; then
    echo "[bootstrap] no apt-get here: Chromium ($chromium) not installed, the UI browser tests will skip" >&2
  elif [ ${#sudo[@]} -gt 0 ] && ! sudo -n true 2>/dev/null; then
    echo "[bootstrap] not root and no passwordless sudo: Chromium ($chromium) not installed," \
      "the UI browser tests will skip (install the 'chromium' package to run them)" >&2
  else
    echo "[bootstrap] installing Debian's chromium (for the UI browser tests)"
    if ! { "${sudo[@]}" apt-get update -qq >/dev/null &&
           "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
             >/dev/null; } ||
       [ ! -x "$chromium" ]; then
      echo "[bootstrap] apt-get could not install chromium (see above); set SVD_DAG_SKIP_BROWSER=1 to run without" \
        "the UI browser tests" >&2
      exit 1
    fi
  fi
fi
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
