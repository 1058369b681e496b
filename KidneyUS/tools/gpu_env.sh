# Sourced by the KidneyUS GPU scripts of this folder: the repository and the three module folders
# on PYTHONPATH (the device machine installs nothing), $OUT made, $PY the interpreter.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$REPO:$REPO/KidneyUS:$REPO/MRIFieldOfView:$REPO/HPOTools${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

# The 80^3 forward latency (trained and inference forms, CUDA graphs; $BENCH_ARGS picks the width
# and adds --compile on a GPU), bounded by $1 seconds, into $OUT/kidney-bench-compile.json or the
# file named by $2; further arguments go to bench. Returns bench's exit.
forward_latency() {
  local seconds="$1" output="${2:-$OUT/kidney-bench-compile.json}"
  shift $(( $# < 2 ? $# : 2 ))
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "$seconds" "$PY" -m KidneyUSLib bench forward $BENCH_ARGS "$@" --device "$DEVICE" --json > "$output"
}
