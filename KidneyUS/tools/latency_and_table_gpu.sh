#!/usr/bin/env bash
# What issue 5 (KidneyUS) still needs from a GPU, in one call of about 9 minutes on an H100
# (TOTAL_SECONDS, default 540, bounds the whole script; give the device call ~580 s):
#   1. the width-32 80^3 forward latency, trained and inference forms, fp32, bf16 +
#      channels_last_3d, CUDA graphs and torch.compile (target <= 3 ms): $OUT/kidney-bench-compile.json,
#      and where the time goes (per operator and input shape): $OUT/kidney-profile.txt
#   2. with AUTOTUNE=1 (the default) and time left, the same with torch.compile(max-autotune),
#      which also tries Triton convolution kernels (minutes of autotuning; its own timeout and
#      file, so a kill loses nothing of 1.): $OUT/kidney-bench-max-autotune.json
#   3. Table 3.1 on phantoms at GPU scale in the time left (experiment_transfer_gpu.sh; the seeds
#      that finish): $OUT/kidney-transfer/{results.json,table.md}, $OUT/kidney-transfer.log
# Needs only python3 with torch, numpy, scipy and safetensors. Log: $OUT/latency-and-table.log.
# SMOKE=1 runs a tiny CPU version (the check before GPU time).
set -uo pipefail

# shellcheck source=gpu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"  # REPO, PYTHONPATH, OUT, PY, START, left, latency_first
LOG="$OUT/latency-and-table.log"

if [ "${SMOKE:-0}" = 1 ]; then
  : "${DEVICE:=cpu}" "${BENCH_ARGS:=--width 4 --repeats 1}" "${TOTAL_SECONDS:=600}"
else
  : "${DEVICE:=auto}" "${BENCH_ARGS:=--width 32 --compile}" "${TOTAL_SECONDS:=540}"
fi
: "${AUTOTUNE:=1}"
export DEVICE
latency_first "$LOG"  # sets BENCH_RC
show() {
  "$PY" - "$1" <<'PY' | tee -a "$LOG"
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["forward"]
except (OSError, ValueError, KeyError) as exc:
    sys.exit(f"no bench result in {sys.argv[1]}: {exc}")
for row in rows:
    print(f"{row['network'][:28]:<28} {row['mode']:<64} " + (f"{row['ms']:8.2f} ms" if "ms" in row else row.get("error", "")))
PY
}
show "$OUT/kidney-bench-compile.json"

if [ "$AUTOTUNE" = 1 ] && [ "$(left)" -gt 360 ]; then
  forward_latency 180 "$OUT/kidney-bench-max-autotune.json" --compile --compile-mode max-autotune 2>> "$LOG"
  echo "max-autotune bench exit $? after $(( $(date +%s) - START )) s" | tee -a "$LOG"
  show "$OUT/kidney-bench-max-autotune.json"
fi

LIMIT=$(left) bash "$REPO/KidneyUS/tools/experiment_transfer_gpu.sh" 2>> "$LOG"
EXPERIMENT_RC=$?
echo "experiment exit $EXPERIMENT_RC after $(( $(date +%s) - START )) s" | tee -a "$LOG"
exit $(( BENCH_RC != 0 || EXPERIMENT_RC != 0 ))
