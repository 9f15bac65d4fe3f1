#!/usr/bin/env bash
# One prepared GPU check (H100/H200, no network): install carried wheels, check GPU results against the CPU,
# time SFD at CIFAR size and print the benchmark tables. Everything goes to stdout and $OUT/gpu_results.txt.
#
# Prepare here:  bash benchmarks/fetch_gpu_wheels.sh          (fills .whl/, git-ignored)
# Run there:     bash benchmarks/gpu_check.sh                 (carry [".whl"]; it ends within $BUDGET_S, 360 s)
# Test here:     BDENSE_GPU_CHECK_DRYRUN=1 bash benchmarks/gpu_check.sh   (CPU, tiny sizes, same code paths)
#
# Parts run in priority order, each under `timeout`; a global deadline shortens or skips the last parts, so
# the script never runs past BUDGET_S. A failing part is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DRY=${BDENSE_GPU_CHECK_DRYRUN:-0}
BUDGET_S=${BUDGET_S:-360}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
RES=$OUT/gpu_results.txt
: > "$RES"
T0=$(date +%s)

if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}; SITE=/tmp/site-dryrun; DEV=cpu
  SMALL=(--preset tiny --resolution 8 --batch 16);   NTRAJ=32; REP=1
  BIG=(--preset tiny --channels 3 --resolution 8 --batch 8); BIGTRAJ=16; CONS=(--dry-run --batch 16)
else
  PY=${PY:-python3}; SITE=/tmp/site; DEV=cuda
  SMALL=(--preset mnist --resolution 28 --batch 128); NTRAJ=1024; REP=10
  BIG=(--preset ddpm-cifar10 --channels 3 --resolution 32 --batch 128); BIGTRAJ=2048; CONS=(--batch 64)
fi

log() { echo "$*" | tee -a "$RES"; }

# part NAME LIMIT_S CMD...: run under timeout, capped by what is left of the global budget
part() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - T0) ))
  if [ "$left" -lt 20 ]; then log ""; log "== $name: SKIPPED, ${left}s of the ${BUDGET_S}s budget left =="; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  log ""; log "== $name (limit ${limit}s, t=$(( $(date +%s) - T0 ))s) =="
  log "\$ $*"
  local s=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$RES"
  local rc=${PIPESTATUS[0]}
  log "== $name: rc=$rc$([ "$rc" = 124 ] && echo ' (TIMED OUT)') in $(( $(date +%s) - s ))s =="
}

log "# bdense GPU check, $(date -u +%FT%TZ), dry-run=$DRY, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$RES"

# (a) carried wheels -> $SITE (pip, or plain unzip of the pure-python wheels if pip is missing)
install() {
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@" 2>&1 \
    | grep -v -i "warning" | tee -a "$RES" || true
  "$PY" -m pip --version >/dev/null 2>&1 || for w in "$@"; do "$PY" -m zipfile -e "$w" "$SITE"; done
}
mkdir -p "$SITE"
if ls .whl/*.whl >/dev/null 2>&1; then install .whl/*.whl; else log "no .whl/*.whl carried: using the installed diffusers"; fi
export PYTHONPATH=$SITE:$PWD
IMPORT_CHECK='import torch, accelerate, huggingface_hub, diffusers, safetensors
from diffusers import UNet2DModel
import bdense.distill.run, bdense.sampling.sample
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "| diffusers",
      diffusers.__version__, "from", diffusers.__file__, "| hub", huggingface_hub.__version__, "| accelerate",
      accelerate.__version__, "| safetensors", safetensors.__version__)'
imports_ok() { local o; o=$("$PY" -c "$IMPORT_CHECK" 2>&1); echo "$o" | tail -4 | tee -a "$RES"; echo "$o" | grep -q '^torch '; }
if ! imports_ok; then
  if ls .whl/fallback/*.whl >/dev/null 2>&1; then
    log "diffusers import failed with the image's packages: installing .whl/fallback (huggingface_hub 2.4.0 + deps)"
    install .whl/fallback/*.whl
  fi
  imports_ok || { log "FATAL: cannot import diffusers/bdense; nothing else would run"; exit 1; }
fi
if [ "$DRY" != 1 ] && ! grep -q "available True" "$RES"; then log "FATAL: torch.cuda.is_available() is False"; exit 1; fi
B="$PY benchmarks"

# (b) GPU vs CPU: teacher trajectory and one SFD step (K=1, K=4): CPU fp32 vs CUDA fp32 (TF32 default/strict), bf16
part "consistency GPU vs CPU" 60 $B/gpu_consistency.py "${CONS[@]}"

# (d) SFD NFE 2 at CIFAR size (35.7M-param DDPM layout, random weights), K=1 vs K=4, fp32 and bf16, -> 200k
part "SFD NFE 2 at CIFAR size, fp32 and bf16" 130 $B/bench_sfd_cost.py --device $DEV "${BIG[@]}" --runs nocache \
  --branches 1,4 --trajectories $BIGTRAJ --repeats 1 --extrapolate 200000 --precisions fp32,bf16

# (c) the benchmark tables at 28x28 (mnist preset), batch 128
part "solver overhead + teacher rollout images/s, fp32" 60 $B/bench_solver.py --device $DEV "${SMALL[@]}" --repeats $REP
part "K=4 vs K=1 iteration and memory" 70 $B/bench_branches.py --device $DEV "${SMALL[@]}" --repeats $REP \
  --iters 3 --memory-rounds 1
part "SFD run cost split, cache vs no cache" 70 $B/bench_sfd_cost.py --device $DEV "${SMALL[@]}" \
  --trajectories $NTRAJ --repeats 2
part "teacher rollout images/s, bf16" 40 $B/bench_solver.py --device $DEV "${SMALL[@]}" --repeats $REP \
  --precision bf16 --solvers dpmpp_3m --student-nfe 2

log ""
log "# done in $(( $(date +%s) - T0 ))s; results in $RES"
