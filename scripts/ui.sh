#!/usr/bin/env bash
# `make ui`: the Dagster UI, the MLflow UI and the rating page on the same home, on loopback.
#   Dagster  http://127.0.0.1:${DAGSTER_PORT:-3000}   MLflow  http://127.0.0.1:${MLFLOW_PORT:-5000}
#   rating   http://127.0.0.1:${RATING_PORT:-8765}    (rating_tasks' newest list; no pairs before the first)
# Metadata links of runs materialized from here point at that MLflow UI (SVD_DAG_MLFLOW_UI_URL).
# A tracking server set in MLFLOW_TRACKING_URI is used as it is (no local MLflow UI is started).
# Both servers are stopped by their process groups when this script ends (Ctrl-C).
set -euo pipefail
# Job control: each server gets its own process group, and SIGINT/SIGTERM are not ignored in it
# (a plain `&` in a script ignores SIGINT, and `dagster dev` then ignores SIGTERM too).
set -m
cd "$(dirname "$0")/.."
home=${SVD_DAG_HOME:-$PWD/.svd_dag}
export SVD_DAG_HOME=$home DAGSTER_HOME=${DAGSTER_HOME:-$home/dagster}
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
# Signals ignored when this script started (it was itself started by `&` somewhere) stay ignored
# in its children, and `dagster dev` then ignores SIGTERM too: each server starts with them reset.
with_signals() { .venv/bin/python -c 'import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT): signal.signal(s, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$@"; }
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -INT -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    alive=0; for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0; sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap stop EXIT INT TERM
if [ -z "${MLFLOW_TRACKING_URI:-}" ]; then
  mlflow_port=${MLFLOW_PORT:-5000}
  with_signals .venv/bin/mlflow ui --backend-store-uri "sqlite:///$home/mlflow.db" --host 127.0.0.1 \
    --port "$mlflow_port" --workers 1 > "$home/mlflow-ui.log" 2>&1 &
  pids+=($!)
  export SVD_DAG_MLFLOW_UI_URL="http://127.0.0.1:$mlflow_port"
  echo "[svd-dag] MLflow UI: $SVD_DAG_MLFLOW_UI_URL (log: $home/mlflow-ui.log)"
fi
rating_port=${RATING_PORT:-8765}
export SVD_DAG_RATING_URL=${SVD_DAG_RATING_URL:-http://127.0.0.1:$rating_port}
with_signals .venv/bin/svd-dag rating serve --host 127.0.0.1 --port "$rating_port" > "$home/rating.log" 2>&1 &
pids+=($!)
echo "[svd-dag] rating page: $SVD_DAG_RATING_URL (serves rating_tasks' newest list, \"no pairs yet\" before the first;" \
     "rater links: .venv/bin/svd-dag rating add-rater <name>; admin link in $home/rating.log)"
with_signals .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}" &
pids+=($!)
echo "[svd-dag] Dagster UI: http://127.0.0.1:${DAGSTER_PORT:-3000}"
wait "${pids[@]}"
