#!/usr/bin/env bash
# Table 3.1 on phantoms at a GPU scale (thesis §3.5.1): 5 seeds x {adults, children, joint
# baselines, fine-tuning, fixed convolutions, GI, intensity, GI + intensity}, width 16 at 4 mm,
# about 8 adults per child as in the thesis' data (400 / 51). Meant for one H100 in <= 8 minutes;
# results.json and table.md are rewritten after every run, so a timeout keeps the finished seeds.
#
# Needs only python3 with torch, numpy, scipy and safetensors. Writes $OUT/kidney-transfer/.
# Knobs (environment): SEEDS, EXP_ADULTS, EXP_CHILDREN, EXP_TESTS, EXP_WIDTH, EXP_EPOCHS,
# TRANSFER_EPOCHS, EXP_BATCH, WORKERS, DEVICE, LIMIT (seconds before the experiment is stopped);
# SMOKE=1: a tiny CPU run. The EXP_ prefix keeps them apart from train_default_gpu.sh's knobs.
set -uo pipefail

# shellcheck source=gpu_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"  # REPO, PYTHONPATH, OUT, PY

if [ "${SMOKE:-0}" = 1 ]; then
  : "${SEEDS:=1}" "${EXP_ADULTS:=2}" "${EXP_CHILDREN:=1}" "${EXP_TESTS:=1}" "${EXP_WIDTH:=2}" "${EXP_EPOCHS:=1}"
  : "${TRANSFER_EPOCHS:=1}" "${EXP_BATCH:=2}" "${WORKERS:=2}" "${DEVICE:=cpu}" "${LIMIT:=600}" "${DOWNSAMPLE:=2}"
else
  : "${SEEDS:=5}" "${EXP_ADULTS:=96}" "${EXP_CHILDREN:=12}" "${EXP_TESTS:=40}" "${EXP_WIDTH:=16}"
  : "${EXP_EPOCHS:=12}" "${TRANSFER_EPOCHS:=40}" "${EXP_BATCH:=4}" "${WORKERS:=$(nproc)}" "${DEVICE:=auto}"
  : "${LIMIT:=440}"
  : "${DOWNSAMPLE:=1}"
fi

timeout "$LIMIT" "$PY" -m KidneyUSLib experiment transfer --seeds "$SEEDS" --adults "$EXP_ADULTS" \
  --children "$EXP_CHILDREN" --test "$EXP_TESTS" --width "$EXP_WIDTH" --epochs "$EXP_EPOCHS" \
  --transfer-epochs "$TRANSFER_EPOCHS" --batch-size "$EXP_BATCH" --lr 1e-3 --transfer-lr 1e-3 \
  --downsample "$DOWNSAMPLE" --workers "$WORKERS" --device "$DEVICE" --output "$OUT/kidney-transfer" \
  --progress json > "$OUT/kidney-transfer.log" 2>&1
RC=$?
grep '"progress"' "$OUT/kidney-transfer.log" | tail -n 3
cat "$OUT/kidney-transfer/table.md" 2>/dev/null || echo "no table written"
exit $RC
