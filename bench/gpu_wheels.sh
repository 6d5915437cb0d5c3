#!/usr/bin/env bash
# Prepare, on this machine (it can reach the package index), what bench/gpu_check.sh needs on a lent
# GPU machine, which cannot fetch anything and has torch, numpy, pandas, pyarrow, grpcio, aiohttp ...
# but not Ray, MLflow or the separators' packages. Everything goes to the git-ignored .whl/ (about
# 35 MB), which the device call carries:  carry [".whl"], command "bash bench/gpu_check.sh".
#   .whl/site.tar.xz  a `pip install --target` for the GPU image's Python (cp312, manylinux x86-64) of
#                     the packages below at requirements.lock's versions, pruned so that the working
#                     tree that travels stays under the 64 MiB a device call allows (Ray's wheel alone
#                     is 79 MB): Ray's Java jars, RLlib, Serve, LLM, workflow and dashboard web build,
#                     MLflow's web UI, and the debug symbols of every binary (strip) are left out.
#   .whl/mixture.wav  the MUSDB18 sample mixture (from ../shared, which does not travel).
# PYV (default 3.12, the GPU image's Python) and DEST (default .whl) may be set: PYV=3.11 makes the
# same tree for this machine's Python, to check that it is complete against a torch-only venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
DEST=${DEST:-.whl}
# What separate, train and evaluate import (with what they import in turn) and the GPU image lacks.
# Not carried: generate's scaper / jams / sox, the MUSDB readers, S3's botocore, test oracles, and
# Ray's runtime_env helpers (virtualenv); the GPU checks use none of them.
PACKAGES="ray jsonschema jsonschema-specifications referencing rpds-py aiohttp-cors colorful opencensus
opencensus-context opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-exporter-prometheus
opentelemetry-semantic-conventions prettytable wcwidth smart-open tensorboardx google-api-core google-auth
googleapis-common-protos proto-plus pyasn1 pyasn1-modules cachetools pydantic pydantic-core annotated-types
typing-inspection
mlflow mlflow-skinny mlflow-tracing alembic mako sqlalchemy sqlparse flask flask-cors blinker itsdangerous
gunicorn graphene graphql-core graphql-relay docker databricks-sdk fastapi starlette uvicorn gitpython gitdb
smmap importlib-metadata python-dotenv cryptography cffi pycparser huey skops httpx2 httpcore2 truststore
demucs julius omegaconf bs-roformer beartype rotary-embedding-torch openunmix norbert
soundfile soxr librosa audioread decorator pooch platformdirs lazy-loader pyloudnorm future ffmpeg-python"
pins=()
for name in $PACKAGES; do
  pin=$(grep -i "^${name}==" requirements.lock || true)
  [ -n "$pin" ] || { echo "$name is not in requirements.lock" >&2; exit 1; }
  pins+=("$pin")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
  --platform manylinux1_x86_64 --target "$work/site" "${pins[@]}"
site="$work/site"
rm -rf "$site/ray/jars" "$site/ray/rllib" "$site/ray/serve" "$site/ray/llm" "$site/ray/workflow" \
  "$site/ray/dashboard/client/build" "$site/mlflow/server/js"
find "$site" -type f \( -name "*.so" -o -name "*.so.*" \) -exec strip --strip-unneeded {} + 2>/dev/null || true
strip --strip-unneeded "$site/ray/core/src/ray/gcs/gcs_server" "$site/ray/core/src/ray/raylet/raylet"
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # the earlier layout of this folder (one wheel per package)
tar cf - -C "$site" . | xz -9 -T2 > "$DEST/site.tar.xz.part"
mv "$DEST/site.tar.xz.part" "$DEST/site.tar.xz"
sample="../shared/data/musdb18-sample/train/Music Delta - 80s Rock/mixture.wav"
if [ -f "$sample" ]; then cp -f "$sample" "$DEST/mixture.wav"; else echo "no $sample: the benches use a synthetic track" >&2; fi
du -sh "$DEST"
