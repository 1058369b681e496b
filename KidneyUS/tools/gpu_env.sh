# Sourced by the KidneyUS GPU scripts of this folder: the repository and the three module folders
# on PYTHONPATH (the device machine installs nothing), $OUT made, $PY the interpreter.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$REPO:$REPO/KidneyUS:$REPO/MRIFieldOfView:$REPO/HPOTools${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$REPO/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
