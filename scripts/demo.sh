#!/usr/bin/env bash
# Set up ./.venv if needed, train (or reuse) the default digits teacher, then compare the SFD baseline (K=1)
# with B-DENSE (K=4, the default targets and weights) at NFE 2 and 3 over 3 training seeds. Everything is reused if run again;
# a run an older demo made with other options (e.g. defaults changed since) is renamed NAME.stale-TIME and made anew.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
BD=.venv/bin/bdense
OUT=${OUT:-runs/demo}
start=$(date +%s)
if [ ! -f "$OUT/teacher/model.safetensors" ]; then
  resume=""; [ -d "$OUT/teacher/checkpoints" ] && resume="--resume"
  $BD train-teacher --data digits --out "$OUT/teacher" $resume
fi
$BD compare --teacher "$OUT/teacher/model.safetensors" --out "$OUT/compare" --nfe 2,3 --seeds 3 \
  --setting baseline:1 --setting bdense:4 --trajectories 6400 --batch 64 --eval-seeds 500 --move-stale
echo "demo finished in $(( $(date +%s) - start )) s"
echo "teacher samples: $OUT/teacher/samples.png"
echo "report:          $OUT/compare/report.md"
