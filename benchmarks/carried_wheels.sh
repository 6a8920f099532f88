# Sourced by the device scripts (gpu_annotators.sh, gpu_training.sh): installs the wheels carried in
# $WHEELS into $SITE_DIR (no index, no deps; nothing can be installed there from a registry) and puts
# it and the repo on PYTHONPATH. Expects PYTHON, SITE_DIR and WHEELS set by the caller.
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "no wheels in $WHEELS: make them here first (see the top of $0) and carry $WHEELS" >&2
    exit 2
fi
t0=$(date +%s)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE_DIR" \
    "${wheels[@]}"
echo "installed ${#wheels[@]} wheels into $SITE_DIR in $(( $(date +%s) - t0 )) s: ${wheels[*]##*/}"
export PYTHONPATH=".:$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=true
