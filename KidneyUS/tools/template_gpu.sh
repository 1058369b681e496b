#!/usr/bin/env bash
# The KidneyUS measurements still open, for one GPU session (about 7 minutes on an H100;
# TOTAL_SECONDS, default 480, bounds the whole script):
#   1. 80^3 forward latency of the width-32 U-Net, trained form and inference form (batch norm
#      folded, no upsampled tensor), fp32, bf16 + channels_last_3d, CUDA graphs, and the
#      inference form through torch.compile (target <= 3 ms on an H100): $OUT/kidney-bench-compile.json
#   2. the template segmenter at full scale: its body from the bundled U-Net, trained end to end
#      (FREEZE=1: body frozen, features cached, as on the CPU; registration local branch and
#      the Dice of φ0∘G in the loss, the U-Net's probability as an input of both branches, unless
#      LOCAL_BRANCH / GLOBAL_LOSS / PROBABILITY_INPUT=0 say otherwise), then `evaluate` on EVAL + EVAL
#      held-out native phantoms against the bundled U-Net (Dice, paired difference, one
#      component, folded voxels): $OUT/kidney-template/, $OUT/kidney-template-evaluate.{json,md}
# Needs only python3 with torch, numpy, scipy and safetensors; the repository goes on PYTHONPATH.
# Log: $OUT/kidney-template.log. SMOKE=1 runs a tiny CPU version (the check before GPU time).
set -uo pipefail

# shellcheck source=gpu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"  # REPO, PYTHONPATH, OUT, PY, START, left, latency_first
LOG="$OUT/kidney-template.log"

if [ "${SMOKE:-0}" = 1 ]; then
  : "${ADULTS:=2}" "${CHILDREN:=2}" "${TESTS:=1}" "${EVAL:=1}" "${TRAIN_SECONDS:=5}" "${EPOCHS:=1}"
  : "${DEVICE:=cpu}" "${WORKERS:=2}" "${BENCH_ARGS:=--width 4 --repeats 1}" "${TOTAL_SECONDS:=900}"
else
  : "${ADULTS:=240}" "${CHILDREN:=240}" "${TESTS:=16}" "${EVAL:=50}" "${TRAIN_SECONDS:=200}" "${EPOCHS:=1000}"
  : "${DEVICE:=auto}" "${WORKERS:=$(nproc)}" "${BENCH_ARGS:=--width 32 --compile}"
fi
: "${TOTAL_SECONDS:=480}" "${FREEZE:=0}" "${LR:=1e-3}" "${BATCH:=4}" "${SEED:=1}"
: "${EVAL_SEED:=3000000}"  # the 100 held-out phantoms of the CPU results in docs/KidneyUS-template.md
: "${LOCAL_BRANCH:=registration}" "${GLOBAL_LOSS:=1}" "${PROBABILITY_INPUT:=1}"  # the CPU's best
# the thesis' network: LOCAL_BRANCH=thesis GLOBAL_LOSS=0 PROBABILITY_INPUT=0
export KIDNEYUS_PHANTOM_CACHE="${KIDNEYUS_PHANTOM_CACHE:-${TMPDIR:-/tmp}/kidney-phantom-cache}"
latency_first "$LOG"  # sets BENCH_RC

TEMPLATE_ARGS=()
[ "$FREEZE" = 1 ] && TEMPLATE_ARGS=(--freeze-body --feature-copies 3)
[ "$PROBABILITY_INPUT" = 1 ] && TEMPLATE_ARGS+=(--probability-input)
timeout $(( $(left) - 120 )) "$PY" -m KidneyUSLib train --method template --init unet-default "${TEMPLATE_ARGS[@]}" \
  --global-pooling attention --local-branch "$LOCAL_BRANCH" --global-loss "$GLOBAL_LOSS" --adults "$ADULTS" --children "$CHILDREN" --native-fraction 0.5 \
  --test-adults "$TESTS" --test-children "$TESTS" --test-native --batch-size "$BATCH" --lr "$LR" \
  --epochs "$EPOCHS" --time-budget "$TRAIN_SECONDS" --workers "$WORKERS" --device "$DEVICE" --seed "$SEED" \
  --output "$OUT/kidney-template" --progress quiet --json >> "$LOG" 2>&1
TRAIN_RC=$?
echo "train exit $TRAIN_RC after $(( $(date +%s) - START )) s" | tee -a "$LOG"

EVAL_RC=1
if [ "$TRAIN_RC" = 0 ] && [ "$(left)" -gt 20 ]; then
  timeout "$(left)" "$PY" -m KidneyUSLib evaluate --model unet-default --model "$OUT/kidney-template" \
    --adults "$EVAL" --children "$EVAL" --first-seed "$EVAL_SEED" --workers "$WORKERS" --device "$DEVICE" \
    --output "$OUT/kidney-template-evaluate.json" --markdown "$OUT/kidney-template-evaluate.md" \
    --progress quiet >> "$LOG" 2>&1
  EVAL_RC=$?
fi
echo "evaluate exit $EVAL_RC after $(( $(date +%s) - START )) s" | tee -a "$LOG"
cat "$OUT/kidney-template-evaluate.md" 2>/dev/null
exit $(( BENCH_RC != 0 || TRAIN_RC != 0 || EVAL_RC != 0 ))
