#!/usr/bin/env bash
# The GPU study (issues 16, 23): one prepared script for one short GPU window (H100/H200, no network), at most 9 min.
#   (p) the teacher step (issue 23): train-teacher's loop against a bare step per preset (bench_teacher_step.py,
#       the loop-overhead ratio), then a torch.profiler table of the mnist loop; about one minute;
#   (c1, c2) an mnist 28x28 teacher trained with the fixed loop toward Inception FID <= 5 (its Heun-35 samples come
#       back for Inception FID on the CPU: 10,000 samples against mnist's 10,000 images), and the domain feature
#       net, in the background from the end of (p);
#   (c3) the pre-registered 28x28 GPU cell of the confirmation (issue 24, docs/confirmation.md, amendment 5): its
#       exact commands (`CELL28=gpu benchmarks/confirm.sh sfd-28@N:I`: mnist-short, 32,000 trajectories, 5 seeds,
#       seed block 1, fresh pools, the frozen default), one training seed per shard, NFE 2 and NFE 3 as two processes
#       at once, the seeds that benchmarks/confirm-results/sfd-28-gpu does not hold yet (benchmarks/confirm_todo.py),
#       until its limit (CONFIRM_LIMIT, default 330 s); every finished seed's parts come back in
#       confirm-results.tar.gz; a seed cut by the limit is lost (the next window runs it again);
#   (b) compiled K=1 against compiled K=4, SFD NFE 2 at CIFAR size (35.7M-param DDPM UNet, bf16, teacher batch 512;
#       eager was 0.93-0.99), with what the window has left (the confirmation comes first: issue 24 is the most
#       important); it shares the GPU with (c1) when that still trains (the ratio is what is asked);
#   (c4, d) teacher samples for Inception FID, the markdown tables, the trained teacher to $OUT.
#   With SPEED=1 (the dry run always) also: (a) CPU-vs-GPU consistency and (b1) the eager CIFAR-size timings
#   (both measured on an H200 on 2026-11-28, benchmarks/RESULTS.md).
# Each python process costs ~20 s of start-up there (torch + CUDA), so the parts are few.
#
# Prepare here:  bash benchmarks/prepare_gpu_study.sh      (wheels + the mnist npz into .whl/, git-ignored)
# Run there:     run(command="bash benchmarks/gpu_study.sh", carry=[".whl"], timeout_s=600)
# Dry run here:  BDENSE_GPU_DRYRUN=1 bash benchmarks/gpu_study.sh   (CPU, tiny sizes, the same code paths; the
#                compiled part traces with dynamo but skips inductor: BDENSE_COMPILE_BACKEND=eager)
# Afterwards, on the CPU: `tar xzf confirm-results.tar.gz -C benchmarks` (the GPU cell's finished seeds, into
# benchmarks/confirm-results/sfd-28-gpu/parts: commit them), and benchmarks/gpu_study_fid.py on samples-teacher.npz
# (Inception FID; see its --help).
#
# Every part is one python process under `timeout`; a global deadline (BUDGET_S, default 540 s) shortens or skips
# what no longer fits, and a failing part is reported while the next one still runs. Everything goes to $OUT:
#   study.txt (the log and all tables), study-runs.tar.gz (reports, plots, metrics, logs, options), the teacher
#   teacher-mnist-fp32.safetensors, samples-teacher.npz, confirm-results.tar.gz (5 files; what comes back: at most
#   8, 16 MiB each). The teacher is packed for bdense/teachers/ on the CPU, once its Inception FID is known:
#   bdense teachers pack teacher-mnist-fp32.safetensors --name mnist --quality "..." --command "..." --out bdense/teachers
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DRY=${BDENSE_GPU_DRYRUN:-0}
BUDGET_S=${BUDGET_S:-540}
SCALE=${LIMIT_SCALE:-1}   # multiplies every part's limit (the CPU test on a loaded machine raises it)
# (a) and (b1) ran on an H200 on 2026-11-28 (benchmarks/RESULTS.md): off by default on a GPU since, so the window
# goes to the teacher and the cells; SPEED=1 runs them (the dry run always does)
SPEED=${SPEED:-$DRY}
OUT=${OUT:-$(mktemp -d)}
W=${WORK:-/tmp/bdense-study}   # run directories, caches (GBs on the GPU machine): not under $OUT
rm -rf "$W"; mkdir -p "$OUT" "$W"
RES=$OUT/study.txt
: > "$RES"
T0=$(date +%s)

if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}; SITE=/tmp/site-dryrun-$$; DEV=cpu
  export BDENSE_COMPILE_BACKEND=eager OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  CONS=(--dry-run --batch 8)
  BIG=(--preset tiny --channels 1 --resolution 8 --batch 8); BIGTRAJ=32; TB=16
  DATA=digits; TEACHER=(--preset tiny --steps 30 --batch 16 --lr 2e-3)
  FEAT=(--steps 20); CONFIRM=(--dry-run)  # (c3) checks its commands with compare --dry-run (no GPU needed)
  STEPBENCH=(--presets digits --batches digits=8 --steps digits=2 --repeats 1 --warmup 0 --profile digits --profile-steps 2)
  SAMPLES=(--teacher-seeds 32 --batch 16); CONFIRM_LIMIT=$(( 60 * SCALE ))
else
  PY=${PY:-python3}; SITE=/tmp/site; DEV=cuda
  CONS=(--batch 64)
  BIG=(--preset ddpm-cifar10 --channels 3 --resolution 32 --batch 128); BIGTRAJ=2048; TB=512
  # measured on the H200: 10-20 steps/s at batch 256 (launch-bound): batch 512 sees twice the images per step;
  # cut at TEACHER_LIMIT, the teacher is finished where it got
  DATA=mnist; TEACHER=(--preset mnist --steps ${TEACHER_STEPS:-8000} --batch ${TEACHER_BATCH:-512} --lr 7e-4 --precision bf16)
  FEAT=(--steps 2000 --device cuda)
  # (c3): 12,800-trajectory SFD runs took 16-20 s with two processes on the GPU (2026-11-28), so a 32,000-trajectory
  # seed (a fresh-pool baseline run, then B-DENSE on its cache) should take ~2.5-3 min: about 2 seeds per NFE
  CONFIRM=()
  # the teacher step at train-teacher's GPU batches; ddpm-cifar10 at the 128 of the 67 ms bf16 step measured there
  STEPBENCH=(--precision bf16 --batches digits=256,mnist=512,ddpm-cifar10=128 --repeats 3 --profile mnist --profile-steps 10)
  SAMPLES=(--teacher-seeds 10000 --batch 1000); CONFIRM_LIMIT=$(( ${CONFIRM_LIMIT:-330} * SCALE ))
fi
export BDENSE_CACHE=${BDENSE_CACHE:-$PWD/.whl/data}   # the carried mnist.npz (prepare_gpu_study.sh)
[ "$DRY" = 1 ] && unset BDENSE_CACHE

log() { echo "$*" | tee -a "$RES"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

# part NAME LIMIT_S CMD...: one process under timeout, capped by what is left of the global budget
part() {
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  local l; l=$(left)
  if [ "$l" -lt 15 ]; then log ""; log "== $name: SKIPPED, ${l}s of the ${BUDGET_S}s budget left =="; return 1; fi
  [ "$limit" -gt "$l" ] && limit=$l
  log ""; log "== $name (limit ${limit}s, t=$(( $(date +%s) - T0 ))s) =="
  log "\$ $*"
  local s; s=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$RES"
  local rc=${PIPESTATUS[0]}
  log "== $name: rc=$rc$([ "$rc" = 124 ] && echo ' (TIMED OUT)') in $(( $(date +%s) - s ))s =="
  return "$rc"
}

log "# bdense GPU study, $(date -u +%FT%TZ), dry-run=$DRY, budget ${BUDGET_S}s, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$RES"

# carried wheels -> $SITE (pip, or plain unzip of the pure-python wheels if pip is missing)
install() {
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@" 2>&1 \
    | grep -v -i "warning" | tee -a "$RES" || true
  "$PY" -m pip --version >/dev/null 2>&1 || for w in "$@"; do "$PY" -m zipfile -e "$w" "$SITE"; done
}
mkdir -p "$SITE"
if [ "$DRY" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then install .whl/*.whl; else log "no wheels installed (dry run, or none carried): using the installed diffusers"; fi
export PYTHONPATH=$SITE:$PWD
IMPORT_CHECK='import torch, diffusers, accelerate, safetensors
from diffusers import UNet2DModel
import bdense.distill.sfd.run, bdense.studies.compare
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "", "| diffusers", diffusers.__version__,
      "| accelerate", accelerate.__version__, "| safetensors", safetensors.__version__)'
imports_ok() { local o; o=$("$PY" -c "$IMPORT_CHECK" 2>&1); echo "$o" | tail -4 | tee -a "$RES"; echo "$o" | grep -q '^torch '; }
if ! imports_ok; then
  if ls .whl/fallback/*.whl >/dev/null 2>&1; then
    log "diffusers import failed with the image's packages: installing .whl/fallback (huggingface_hub + deps)"
    install .whl/fallback/*.whl
  fi
  imports_ok || { log "FATAL: cannot import diffusers/bdense; nothing else would run"; exit 1; }
fi
if [ "$DRY" != 1 ] && ! grep -q "available True" "$RES"; then log "FATAL: torch.cuda.is_available() is False"; exit 1; fi
if [ "$DRY" != 1 ] && [ ! -f "$BDENSE_CACHE/mnist.npz" ]; then log "WARNING: $BDENSE_CACHE/mnist.npz not carried: part (c) will fail"; fi
B="$PY benchmarks"
BD="$PY -m bdense.cli"

# (p) the teacher step first, on an idle GPU: loop vs bare step per preset, then the profile of the mnist loop
part "(p) teacher step: train-teacher loop vs bare step, and profile" 75 $B/bench_teacher_step.py --device $DEV \
  "${STEPBENCH[@]}"

# (c1, c2) the 28x28 teacher and the domain feature network, in the background from now on
bg() {  # bg NAME LIMIT CMD...: a background part, its output in $W/NAME.log
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  log ""; log "== $name: started in the background at t=$(( $(date +%s) - T0 ))s (limit ${limit}s) =="; log "\$ $*"
  ( ts=$(date +%s); timeout --kill-after=5 "$limit" "$@" > "$W/$name.log" 2>&1
    echo "== $name: rc=$? in $(( $(date +%s) - ts ))s ==" >> "$W/$name.log" ) &
}
# compiled (TEACHER_COMPILE=1, the default): the eager step ran at 10-20 steps/s on the H200, launch-bound; the
# compiled SFD student trained fine there (b2). The first iteration's time (compilation) is in teacher/log.txt.
TC=(); [ "${TEACHER_COMPILE:-1}" = 1 ] && TC=(--compile)
bg c1-teacher "${TEACHER_LIMIT:-$([ "$SPEED" = 1 ] && echo 200 || echo 280)}" $BD train-teacher --data $DATA "${TEACHER[@]}" --out "$W/teacher" --device $DEV \
  --log-every 500 --checkpoint-every 100000 "${TC[@]}"
bg c2-features 120 $BD train-features --data $DATA --out "$W/features.safetensors" "${FEAT[@]}"

# (a) GPU vs CPU: teacher trajectory and one SFD step (K=1, K=4), CPU fp32 vs CUDA fp32 / strict / bf16
if [ "$SPEED" = 1 ]; then part "(a) consistency GPU vs CPU" 90 $B/gpu_consistency.py "${CONS[@]}"; fi

# (c3) the pre-registered GPU 28x28 cell (issue 24), one training seed per shard, NFE 2 and 3 at once; its own
# output roots under $W; confirm.sh copies each finished shard's parts into $W/confirm-results/sfd-28-gpu/parts
c3() {  # NFE: the seeds the committed results lack, one shard each, in one confirm.sh process (one start-up)
  local nfe=$1 todo stages=() i
  todo=$($PY benchmarks/confirm_todo.py benchmarks/confirm-results/sfd-28-gpu --nfe "$nfe" --seeds 5 --seed-block 1)
  [ "$DRY" = 1 ] && todo=${todo%% *}  # the dry run checks one shard's command per NFE
  for i in $todo; do stages+=("sfd-28@$nfe:$i"); done
  if [ ${#stages[@]} -eq 0 ]; then echo "NFE $nfe: every seed is committed already"; return 0; fi
  echo "NFE $nfe: seeds (0-based) $todo to run, in this order"
  CELL28=gpu R=$W/confirm RES=$W/confirm-results BD="$BD" PY="$PY" bash benchmarks/confirm.sh "${CONFIRM[@]}" \
    "${stages[@]}"
}
l=$(( $(left) - 150 )); [ "$l" -gt "$CONFIRM_LIMIT" ] && l=$CONFIRM_LIMIT   # leave time for (c1)'s end, (c4), (d)
if [ "$l" -ge 60 ]; then
  log ""; log "== (c3) the GPU 28x28 confirmation cell, NFE 2 and NFE 3 at once (limit ${l}s, t=$(( $(date +%s) - T0 ))s) =="
  C3PIDS=()
  for nfe in 2 3; do
    ( timeout --kill-after=5 "$l" bash -c "$(declare -f c3); $(declare -p W DRY PY BD CONFIRM); c3 $nfe" \
        > "$W/c3-nfe$nfe.log" 2>&1; echo "rc=$?" >> "$W/c3-nfe$nfe.log" ) &
    C3PIDS+=($!)
  done
  wait "${C3PIDS[@]}"
  for nfe in 2 3; do
    log "-- NFE $nfe: $(grep -h '^NFE\|^== \|^+ bdense\|^error' "$W/c3-nfe$nfe.log" | tail -8 | tr '\n' ' ')$(tail -1 "$W/c3-nfe$nfe.log")"
  done
  done_parts=$(find "$W/confirm-results" -name '*.json' 2>/dev/null | wc -l)
  log "== (c3) done at t=$(( $(date +%s) - T0 ))s: $done_parts finished seed shard(s) =="
  if [ "$done_parts" -gt 0 ]; then tar czf "$OUT/confirm-results.tar.gz" -C "$W" confirm-results; fi
else
  log ""; log "== (c3) SKIPPED: ${l}s left for it =="
fi

# (b) SFD NFE 2 at CIFAR size, compiled K=1 vs compiled K=4 -> minutes per 200k trajectories (random weights: speed
# only). Each K is a new graph to compile (1-2 min at this size); no untimed warm-up run: the first iteration
# (compilation included) is reported apart, the steady state counts from the second teacher rollout on. It shares
# the GPU with (c1) when it still trains: the K4/K1 ratio is the result, not the minutes. After (c3): it gets what
# the window has left (skipped when that is under ~200 s).
if [ $(( $(left) - 150 )) -lt 200 ]; then
  log ""; log "== (b): SKIPPED, $(left)s left (it needs ~200 s beside the 150 s kept for (c1)'s end, (c4), (d)) =="
else part "(b) SFD NFE 2 at CIFAR size, compiled teacher+student, bf16, teacher batch $TB, K=1 vs K=4" 230 \
  $B/bench_sfd_cost.py --device $DEV "${BIG[@]}" --runs nocache --branches 1,4 --trajectories $BIGTRAJ --repeats 1 \
  --warmup 0 --extrapolate 200000 --precisions bf16 --compile both --teacher-batch $TB
fi
if [ "$SPEED" = 1 ]; then
part "(b1) SFD NFE 2 at CIFAR size, eager, bf16 and fp32" 110 $B/bench_sfd_cost.py --device $DEV "${BIG[@]}" \
  --runs nocache --branches 1,4 --trajectories $BIGTRAJ --repeats 1 --extrapolate 200000 --precisions bf16,fp32
fi

log ""; log "== waiting for (c1) and (c2) (t=$(( $(date +%s) - T0 ))s) =="
wait
for n in c1-teacher c2-features; do
  tr '\r' '\n' < "$W/$n.log" | grep -v "^\s*$" | grep -v "it/s\]\|s/it\]" | tail -4 | tee -a "$RES"
done
grep -h "first iteration\|interrupted" "$W/teacher/log.txt" 2>/dev/null | tee -a "$RES"
TEACHER_FILE=$W/teacher/model.safetensors
if [ ! -f "$TEACHER_FILE" ] && ls "$W"/teacher/checkpoints/state-*.safetensors >/dev/null 2>&1; then
  # cut by its time limit: SIGTERM wrote a checkpoint; resuming with --steps at that step only writes the model
  # (EMA weights) and its sample grid (steps may change on resume)
  step=$(ls "$W"/teacher/checkpoints | sed -n 's/^state-0*\([0-9][0-9]*\)\.safetensors$/\1/p' | sort -n | tail -1)
  part "(c1) teacher cut at step $step: finish it there" 90 $BD train-teacher --data $DATA "${TEACHER[@]}" \
    --steps "$step" --out "$W/teacher" --device $DEV --resume
fi
[ -f "$TEACHER_FILE" ] || log "(c1) no teacher model: part (c) cannot run"

# (c4) the new teacher's samples for Inception FID (computed on the CPU afterwards)
if [ -f "$TEACHER_FILE" ]; then
  part "(c4) teacher samples for Inception FID on the CPU" 60 $B/gpu_study_samples.py --teacher "$TEACHER_FILE" \
    --out "$OUT" "${SAMPLES[@]}"
fi

# (d) the tables, and everything small to $OUT
log ""; log "# Tables"
for rep in "$W"/confirm/sfd-28-gpu-nfe*/report.md; do
  if [ -f "$rep" ]; then log ""; log "## $rep"; cat "$rep" >> "$RES"; cat "$rep"; fi
done
for f in "$W"/c3-nfe*.log; do [ -f "$f" ] && grep -i -B2 -A8 "traceback\|error" "$f" | tail -20 | tee -a "$RES"; done
[ -f "$TEACHER_FILE" ] && cp "$TEACHER_FILE" "$OUT/teacher-$DATA-fp32.safetensors"
tar czf "$OUT/study-runs.tar.gz" -C "$W" --exclude=checkpoints --exclude=cache --exclude=snapshots \
  --exclude='*.safetensors' --exclude='*.partial' . 2>/dev/null
log ""; log "# \$OUT: $(cd "$OUT" && find . -type f -printf '%p (%s bytes)  ')"
log "# done in $(( $(date +%s) - T0 ))s of ${BUDGET_S}s; results in $RES"
