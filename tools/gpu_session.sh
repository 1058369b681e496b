#!/usr/bin/env bash
# One GPU session (device machine: python3 with torch, numpy, scipy, safetensors; no SimpleITK,
# no slicer-core): trains the bundled default models of both segmentation modules at once on the
# one GPU and benchmarks them there. Results land in $OUT (at most 8 files come back):
#   mri-model/{weights.safetensors,model.json}     MRIFieldOfView slice classifier (Table 2.7 baseline width)
#   kidney-unet/{weights.safetensors,model.json}   KidneyUS U-Net, adults + children, joint with oversampling
#   mri-results.json       training result + CUDA localize bench
#   kidney-train.json      training result (held-out phantom Dice)
#   kidney-bench-cuda.json 80^3 forward latency (fp32, bf16 + channels_last_3d, CUDA graphs, compile), end to end
#   gpu.log                every log
# Usage on the device machine, from the repository root: bash tools/gpu_session.sh
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH="$REPO:$REPO/KidneyUS:$REPO/MRIFieldOfView:$REPO/HPOTools"
export PYTHONUNBUFFERED=1
LOG="$OUT/gpu.log"
: "${MRI_SECONDS:=200}" "${KIDNEY_SECONDS:=200}" "${PY:=python3}" "${DEVICE:=cuda}"
# SMOKE=1: a tiny CPU run of the whole script, to check it before spending GPU time.
if [ "${SMOKE:-0}" = 1 ]; then
  MRI_SIZE=(--phantoms 4 --max-matrix 96 --samples-per-epoch 64 --epochs 1)
  KIDNEY_ENV=(SMOKE=1)
else
  MRI_SIZE=(--phantoms 160 --samples-per-epoch 16000 --epochs 40)
  KIDNEY_ENV=(ADULTS=320 CHILDREN=320 TESTS=40 WORKERS=8 TRAIN_SECONDS="$KIDNEY_SECONDS")
fi
{ date; nvidia-smi -L; "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$LOG" 2>&1

mri() {
  "$PY" -m MRIFieldOfViewLib train "${MRI_SIZE[@]}" --max-slices-per-volume 64 --workers 6 \
    --blocks 5 --convs-per-block 1 --filters-log2 6 --filter-size 3 --batch-norm --fc-units 1024,256 \
    --dropout 0.3 --learning-rate 0.02 --batch-size 32 --weight-decay 1e-4 \
    --time-limit-min "$("$PY" -c "print($MRI_SECONDS/60)")" --seed 0 \
    --device "$DEVICE" $([ "$DEVICE" = cuda ] && echo --bf16) --output "$OUT/mri-model" --progress quiet --json > /tmp/mri-train.json 2> /tmp/mri-train.log
  echo "mri train exit $?" >> /tmp/mri-train.log
  "$PY" -m MRIFieldOfViewLib bench localize --model "$OUT/mri-model" --device "$DEVICE" --json --progress quiet \
    > /tmp/mri-bench.json 2>> /tmp/mri-train.log
  echo "mri bench exit $?" >> /tmp/mri-train.log
  "$PY" - "$OUT/mri-results.json" <<'PY'
import json, sys
def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
json.dump({"train": load("/tmp/mri-train.json"), "bench_cuda": load("/tmp/mri-bench.json")},
          open(sys.argv[1], "w"), indent=2)
PY
}

mri &
MRI_PID=$!
env OUT=/tmp/kidney PYTHON="$PY" "${KIDNEY_ENV[@]}" bash "$REPO/KidneyUS/tools/train_default_gpu.sh" > /tmp/kidney-run.log 2>&1
echo "kidney script exit $?" >> /tmp/kidney-run.log
wait "$MRI_PID"
cp -r /tmp/kidney/kidney-unet "$OUT/" 2>/dev/null
cp /tmp/kidney/kidney-train.json /tmp/kidney/kidney-bench-cuda.json "$OUT/" 2>/dev/null
{ echo "== mri"; cat /tmp/mri-train.log; echo "== kidney"; cat /tmp/kidney-run.log /tmp/kidney/kidney-train.log 2>/dev/null; } >> "$LOG"
tail -n 40 "$LOG"
ls -la "$OUT" "$OUT"/*/
