#!/usr/bin/env bash
# Prepare, on this machine (it can reach the package index), what the GPU checks of
# bench/gpu_check.sh need on a lent GPU machine, which cannot fetch anything: cp312 wheels, at
# requirements.lock's versions, of the packages the GPU benches import that the GPU image lacks
# (it has torch, numpy, scipy, einops, numba, pyyaml, tqdm, pyarrow ...), and the MUSDB18 sample
# mixture (from ../shared, which does not travel). Everything goes to .whl/ (git-ignored), which
# the device call carries:  carry [".whl"], command "bash bench/gpu_check.sh".
# Not here: ray (its wheel, 79 MB, is over the 64 MiB a device call may carry) and mlflow, so the
# Ray Data / Ray Train GPU paths cannot run there; the checks run sepcluster's estimators and
# training steps in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="beartype bs-roformer demucs julius librosa audioread decorator pooch platformdirs soxr omegaconf
rotary-embedding-torch soundfile cffi pycparser lazy-loader"
mkdir -p .whl
pins=()
for name in $PACKAGES; do
  pin=$(grep -i "^${name}==" requirements.lock || true)
  [ -n "$pin" ] || { echo "$name is not in requirements.lock" >&2; exit 1; }
  pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
sample="../shared/data/musdb18-sample/train/Music Delta - 80s Rock/mixture.wav"
if [ -f "$sample" ]; then cp "$sample" .whl/mixture.wav; else echo "no $sample: the bench uses a synthetic track" >&2; fi
du -sh .whl
