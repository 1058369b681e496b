# Sourced by the KidneyUS GPU scripts of this folder: the repository and the three module folders
# on PYTHONPATH (the device machine installs nothing), $OUT made, $PY the interpreter.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$REPO:$REPO/KidneyUS:$REPO/MRIFieldOfView:$REPO/HPOTools${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

# The width-32 80^3 forward latency (trained and inference forms, CUDA graphs; $BENCH_ARGS adds
# --compile on a GPU) into $OUT/kidney-bench-compile.json, bounded by $1 seconds; returns bench's exit.
forward_latency() {
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "$1" "$PY" -m KidneyUSLib bench forward $BENCH_ARGS --device "$DEVICE" --json \
    > "$OUT/kidney-bench-compile.json"
}
