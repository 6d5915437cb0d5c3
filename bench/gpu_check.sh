#!/usr/bin/env bash
# The GPU checks of issues 12 and 13 in one call, for a session whose task is lent a GPU machine
# (device tool). Prepare here first:  bash bench/gpu_wheels.sh   (fills the git-ignored .whl/)
# then one device call:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Each step has its own time limit (about 8 minutes in all); logs and JSON come back in $OUT.
#   1. bench/separate_gpu.py: HTDemucs (default size) and BS-RoFormer (viperx size) through
#      sepcluster's estimator on CUDA: realtime factor and peak GPU memory at batch 1/4/16 in
#      fp32 / bf16 / fp16, and the SDR of the autocast stems against fp32 on the MUSDB18 sample.
#   2. bench/train.py --sections gpu: training samples/s and peak memory, bf16 vs fp32, HTDemucs and
#      BS-RoFormer demo configs at batch 16.
#   3. BSS Eval v4 on CUDA against the CPU (tests/evaluate/test_bsseval.py::test_cuda_matches_cpu's
#      check, without museval, which the image lacks).
# PYTHON (default python3: the image's, which holds CUDA torch) and OUT (default /tmp/gpu-check)
# may be set; SMOKE=1 runs every step on the CPU with small settings (a check of this script).
set -u
OUT=${OUT:-/tmp/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${SMOKE:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -e "^\s*warnings.warn" -e "UserWarning" "$OUT/$name.log" | tail -40
  echo "== $name: rc=$rc in $(( $(date +%s) - start )) s"
}

if [ -n "${SMOKE:-}" ]; then
  step separate_gpu 300 $PY bench/separate_gpu.py --device cpu --quick --seconds 8 --batches 1,2 --precisions fp32 \
    --audio .whl/mixture.wav --json "$OUT/separate_gpu.json"
else
  step separate_gpu 300 $PY bench/separate_gpu.py --audio .whl/mixture.wav --json "$OUT/separate_gpu.json"
fi
step train_gpu 180 $PY bench/train.py --sections gpu
step bsseval_cuda 60 $PY - <<'PY'
import numpy as np, torch
from sepcluster.evaluate import bsseval
from tests.evaluate.conftest import synthetic_track
r, e, rate = synthetic_track(2.0, nsrc=3, nchan=2, seed=9)
dev = "cuda" if torch.cuda.is_available() else "cpu"
cpu = bsseval.bss_eval(r, e, window=rate, hop=rate, device="cpu")
got = bsseval.bss_eval(r, e, window=rate, hop=rate, device=dev)
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(cpu[:4], got[:4]))
print(f"BSS Eval on {dev} vs cpu: largest difference of SDR/ISR/SIR/SAR {diff:.2e} dB (test tolerance 1e-6)")
PY
