#!/usr/bin/env bash
# Table 3.1 on phantoms at a GPU scale (thesis §3.5.1): 5 seeds x {adults, children, joint
# baselines, fine-tuning, fixed convolutions, GI, intensity, GI + intensity}, width 16 at 4 mm,
# about 8 adults per child as in the thesis' data (400 / 51). Meant for one H100 in <= 8 minutes;
# results.json and table.md are rewritten after every run, so a timeout keeps the finished seeds.
#
# Needs only python3 with torch, numpy, scipy and safetensors. Writes $OUT/kidney-transfer/.
# Knobs (environment): SEEDS, ADULTS, CHILDREN, TESTS, WIDTH, EPOCHS, TRANSFER_EPOCHS, BATCH,
# WORKERS, DEVICE, LIMIT (seconds before the experiment is stopped); SMOKE=1: a tiny CPU run.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$REPO:$REPO/KidneyUS:$REPO/MRIFieldOfView:$REPO/HPOTools${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

if [ "${SMOKE:-0}" = 1 ]; then
  : "${SEEDS:=1}" "${ADULTS:=2}" "${CHILDREN:=1}" "${TESTS:=1}" "${WIDTH:=2}" "${EPOCHS:=1}"
  : "${TRANSFER_EPOCHS:=1}" "${BATCH:=2}" "${WORKERS:=2}" "${DEVICE:=cpu}" "${LIMIT:=600}" "${DOWNSAMPLE:=2}"
else
  : "${SEEDS:=5}" "${ADULTS:=96}" "${CHILDREN:=12}" "${TESTS:=40}" "${WIDTH:=16}" "${EPOCHS:=12}"
  : "${TRANSFER_EPOCHS:=40}" "${BATCH:=4}" "${WORKERS:=$(nproc)}" "${DEVICE:=auto}" "${LIMIT:=440}"
  : "${DOWNSAMPLE:=1}"
fi

timeout "$LIMIT" "$PY" -m KidneyUSLib experiment transfer --seeds "$SEEDS" --adults "$ADULTS" \
  --children "$CHILDREN" --test "$TESTS" --width "$WIDTH" --epochs "$EPOCHS" \
  --transfer-epochs "$TRANSFER_EPOCHS" --batch-size "$BATCH" --lr 1e-3 --transfer-lr 1e-3 \
  --downsample "$DOWNSAMPLE" --workers "$WORKERS" --device "$DEVICE" --output "$OUT/kidney-transfer" \
  --progress json > "$OUT/kidney-transfer.log" 2>&1
RC=$?
grep '"progress"' "$OUT/kidney-transfer.log" | tail -n 3
cat "$OUT/kidney-transfer/table.md" 2>/dev/null || echo "no table written"
exit $RC
