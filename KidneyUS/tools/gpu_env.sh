# Sourced by the KidneyUS GPU scripts of this folder: the repository and the three module folders
# on PYTHONPATH (the device machine installs nothing), $OUT made, $PY the interpreter, the clock
# (START, left: seconds of $TOTAL_SECONDS left) and the latency bench.
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

START=$(date +%s)
left() { echo $(( TOTAL_SECONDS - ($(date +%s) - START) )); }

# The torch build and GPU into the log $1, then forward_latency 200 into the default file, with the
# per-operator profile of the fastest eager form in $OUT/kidney-profile.txt; sets BENCH_RC.
latency_first() {
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$1"
  forward_latency 200 "$OUT/kidney-bench-compile.json" --profile "$OUT/kidney-profile.txt" 2>> "$1"
  BENCH_RC=$?
  echo "bench exit $BENCH_RC after $(( $(date +%s) - START )) s" | tee -a "$1"
}
