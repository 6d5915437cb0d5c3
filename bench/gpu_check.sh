#!/usr/bin/env bash
# The GPU checks of issues 12 and 13 in one call, for a session whose task is lent a GPU machine
# (device tool). Prepare here first:  bash bench/gpu_wheels.sh   (fills the git-ignored .whl/)
# then one device call:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# The steps run in this order, each under its own time limit and all within BUDGET seconds (default
# 560, inside the call's 600); logs and JSON come back in $OUT:
#   1. bench/separate_gpu.py: HTDemucs (default size) and BS-RoFormer (viperx size) through
#      sepcluster's estimator on CUDA: realtime factor and peak GPU memory at batch 1/4/16 in
#      fp32 / bf16 / fp16, and the SDR of the autocast stems against fp32 on the MUSDB18 sample.
#   2. bench/gpu_ray.py: the Ray paths. separate's Ray Data catalog pipeline on the GPU with
#      --gpus-per-actor 1 and 0.5 (the catalog rows name the worker and GPU of each track: two
#      workers on one GPU is the packing), and train on one Ray Train GPU worker (NCCL, bf16).
#   3. bench/train.py --sections gpu: training samples/s and peak memory, bf16 vs fp32, HTDemucs and
#      BS-RoFormer demo configs at batch 16.
#   4. BSS Eval v4 on CUDA against the CPU (tests/evaluate/test_bsseval.py::test_cuda_matches_cpu's
#      check, without museval, which the image lacks).
# PYTHON (default python3: the image's, which holds CUDA torch), OUT (default /tmp/gpu-check) and
# WHL (default .whl, what gpu_wheels.sh made) may be set; SMOKE=1 runs every step on the CPU with
# small settings (a check of this script: with WHL made by `PYV=3.11 DEST=... bench/gpu_wheels.sh`
# and PYTHON a venv holding only torch and what the GPU image has, it checks that the carried
# packages are complete).
set -u
OUT=${OUT:-/tmp/gpu-check}
PY=${PYTHON:-python3}
WHL=${WHL:-.whl}
BUDGET=${BUDGET:-560}
deadline=$(( $(date +%s) + BUDGET ))
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" SEPCLUSTER_NO_PROGRESS=1
if [ -f "$WHL/site.tar.xz" ]; then
  site=$(mktemp -d /tmp/sepcluster-site.XXXX)
  tar xJf "$WHL/site.tar.xz" -C "$site" || { echo "unpacking $WHL/site.tar.xz failed"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$site"
else
  echo "no $WHL/site.tar.xz: run bash bench/gpu_wheels.sh first"
fi
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2 start left
  shift 2
  start=$(date +%s)
  left=$(( deadline - start ))
  if [ "$left" -lt 30 ]; then echo "== $name: skipped (${left} s of the budget left)"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -e "^\s*warnings.warn" -e "UserWarning" "$OUT/$name.log" | tail -40
  echo "== $name: rc=$rc in $(( $(date +%s) - start )) s"
}

if [ -n "${SMOKE:-}" ]; then
  step separate_gpu 300 $PY bench/separate_gpu.py --device cpu --quick --seconds 8 --batches 1,2 --precisions fp32 \
    --audio "$WHL/mixture.wav" --json "$OUT/separate_gpu.json"
  step gpu_ray 300 $PY bench/gpu_ray.py --device cpu --tracks 2 --seconds 10 --epochs 1 --samples 16 \
    --audio "$WHL/mixture.wav" --json "$OUT/gpu_ray.json"
else
  step separate_gpu 240 $PY bench/separate_gpu.py --audio "$WHL/mixture.wav" --json "$OUT/separate_gpu.json"
  step gpu_ray 180 $PY bench/gpu_ray.py --audio "$WHL/mixture.wav" --json "$OUT/gpu_ray.json"
fi
step train_gpu 120 $PY bench/train.py --sections gpu
step bsseval_cuda 45 env RAY_AUTH_MODE=disabled $PY - <<'PY'  # (tests/conftest.py would make a Ray token)
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
