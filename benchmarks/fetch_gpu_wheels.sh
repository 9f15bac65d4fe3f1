#!/usr/bin/env bash
# Fetch the wheels benchmarks/gpu_study.sh installs on the GPU machine (which has no network) into .whl/.
#
# The GPU image (python 3.12, torch 2.11 + CUDA, accelerate, safetensors, numpy, pillow, requests, filelock,
# regex, huggingface-hub of unknown version) lacks diffusers, which is pure Python: .whl/diffusers-*.whl.
# diffusers 0.42.1 declares huggingface-hub>=1.32; if the image's hub is older and `from diffusers import
# UNet2DModel` fails there, gpu_study.sh installs .whl/fallback/ (huggingface_hub 2.4.0, as in our venv, with
# its dependencies, ~8 MB) and tries again. importlib_metadata (also declared) is only imported on python < 3.8.
# optuna is not needed by the GPU check and is not fetched.
#
#   bash benchmarks/fetch_gpu_wheels.sh   # (benchmarks/prepare_gpu_study.sh runs it and adds the data)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64)
mkdir -p .whl/fallback
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl diffusers==0.42.1
"$PY" -m pip download -q "${PLAT[@]}" -d .whl/fallback huggingface_hub==2.4.0
echo "diffusers runtime requirements:"
unzip -p .whl/diffusers-*.whl '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^/  /'
ls -1 .whl .whl/fallback
du -sh .whl
