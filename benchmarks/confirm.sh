#!/usr/bin/env bash
# The pre-registered confirmation of docs/confirmation.md, end to end: teachers, every SFD cell, the PD budget search,
# the PD confirmation, then the reports regenerated from the run directories and the family-wise verdict.
# Resumable: run it again after a stop; finished teachers, caches, runs and evaluations are reused (bdense compare
# reuses everything under its --out; a teacher run continues from its checkpoints).
#
# CPU TIME MEASURED so far (2026-12-02, one torch thread per stage, two stages at once on the 2-core machine):
#   teachers 19 min (7.3 + 6.7 + 4.7); pd-search 9.4 min (the first grid point met the criterion); pd-confirm 65 min;
#   sfd-28 (CPU-sized), second attempt as two NFE shards side by side (amendment 2): NFE 2 ~19 min per baseline run
#   (its fresh 5,120-trajectory cache included), 7-9 min per B-DENSE run (cache reused), 107 min for the shard; NFE 3
#   ~28 min per baseline run, ~11 min per B-DENSE run, ~140 min; plus ~16 min per shard for the references and
#   teacher rows and 4 min for the feature net: ~2.6 h wall, ~4.5 CPU-hours. verdict: 8.5 min.
#   teachers, second time (2026-12-03): digits-s101 9.0 min, digits-s102 8.8 min, digits-v-s101 6.9 min.
#   sfd-digits-a@2 (19,200 trajectories, 5 seeds, beside another stage): ~6.5 min per baseline run.
#   digits cells (2026-12-03, one NFE or seed shard per core): 47 min (NFE 2) to 97 min (NFE 4 and 5) per NFE of 5
#   seeds: ~6.5-15 min per baseline run (its fresh 19,200-trajectory cache included), ~4.5-8 min per B-DENSE run;
#   both digits cells ~10.4 CPU-hours together (301 + 322 min; the estimate below said ~10 h).
#   sfd-mnist16@2 (2026-12-03): seeds 0,1 in ~65 min, seeds 2,3,4 in 97 min: ~13 min to make a seed's trajectories,
#   ~9-11 min to train and evaluate a baseline run, ~10 min per B-DENSE run, ~3.5 min per shard of references.
#   sfd-mnist16@3 and @4 (2026-12-03, seed shards of 2-3 seeds, one per core, beside another shard and at times the
#   test suite): 86-164 min per shard, ~105-155 min for the NFE 4 ones; the whole 16x16 cell ~13 CPU-hours (the estimate below said ~9 h).
#   verdict over all 26 (2026-12-03 17:22, every shard merged, every report regenerated): 5.8 min.
# The rest is an ESTIMATE (first made for the whole script, before any digits or 16x16 run), as follows:
# CPU TIME: an ESTIMATE, not a measurement: about 27 h on the project's 2-core machine with one torch thread
# (OMP_NUM_THREADS=1), ~14 h wall when two stages run at once (one per core). Derived from measured timings:
#   - digits SFD: `make demo`'s comparison took ~18 min for 12 runs x 6,400 trajectories (README, 2026-11-28), i.e.
#     ~14 ms per trained trajectory all-in (cache, training, evaluation) at NFE 2-3; x1.4 for NFE 2-5 (work grows
#     with NFE) and +4 ms for one cache per seed (--pool fresh; 8.3 ms per cached trajectory, benchmarks/RESULTS.md
#     bench_sfd_cost) -> ~24 ms x 768,000 trajectories per teacher = ~5 h per digits teacher, 10 h for two;
#   - 16x16 (mnist16): the digits rate x3 for 4x the pixels (a guess until the teacher's card gives its speed)
#     x 576,000 trajectories = ~9 h (the least certain line: +-50%);
#   - 28x28 on CPU (mnist-short, 3 seeds, 5,120 trajectories): RESULTS.md's ~50 min estimate for this design at two
#     threads, x1.7 for one thread, + 4 extra fresh-pool caches of ~11 min = ~2 h;
#   - teachers: two digits teachers (~12 min each, README demo) and a digits v-teacher (7.9 min, docs/pd.md): 0.5 h;
#   - PD: 0.11 s per iteration at batch 32 and ~0.6 s per 1,000-image tiny forward (docs/pd.md): the budget search
#     0.3-2.7 h (it stops at the first budget that meets the criterion), the confirmation ~2.8 h at 1,000
#     iterations per round (scales with the budget found).
# The GPU 28x28 cell (CELL28=gpu) instead takes ~15 min on one H200 (docs/gpu-study.md: 4.7-12 min per 200k
# trajectories) and is not in the CPU total.
#
# usage: bash benchmarks/confirm.sh [--dry-run] [STAGE ...]
#   stages, in order (default: all): teachers sfd-digits-a sfd-digits-b sfd-mnist16 sfd-28 pd-search pd-confirm verdict
#   --dry-run: train nothing; print the teacher commands and check every compare command with bdense's --dry-run
#   env: R (output root, default runs/confirm), CELL28 (cpu | gpu, default cpu), BD (bdense), PY (python),
#   KEPT (committed bytes, default benchmarks/confirm-teachers: the digits teachers, used instead of training
#   them, and CELL-features.safetensors / CELL-ref-stats.npz, copied into each of CELL's folders: the GPU 28x28
#   cell runs as seed shards over several GPU windows, each a fresh machine, and all must measure alike),
#   RES (committed copies of every finished cell's and shard's results, default benchmarks/confirm-results: the
#   verdict reads its numbers there, so a cell's shards may finish on different machines and runs/ may be lost)
#   an SFD stage with @N (e.g. sfd-28@3) runs that cell's NFE N alone, into its own folder CELL-nfeN: the same runs,
#   seeds and pools as the whole cell (a run depends only on its NFE, setting and seed), so two shards of one cell run
#   on two cores at once; the verdict stage merges a cell's shards (their parts/) into CELL before reporting it.
#   @N:I,J (e.g. sfd-mnist16@2:3,4) runs only training seeds I,J (0-based) of NFE N, into CELL-nfeN-seedsI+J
#   (compare --only-seeds), for a shard that would not finish in one sitting.
# Two stages on two cores: `bash benchmarks/confirm.sh teachers` first, then e.g. `... sfd-digits-a &` beside
# `... sfd-digits-b`; each stage has its own output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BD=${BD:-.venv/bin/bdense}
PY=${PY:-.venv/bin/python}
R=${R:-runs/confirm}
CELL28=${CELL28:-cpu}
DRY=""
STAGES=()
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    teachers|sfd-digits-a|sfd-digits-b|sfd-mnist16|sfd-28|pd-search|pd-confirm|verdict) STAGES+=("$a") ;;
    sfd-digits-a@[2-5]|sfd-digits-b@[2-5]|sfd-mnist16@[2-4]|sfd-28@[23]) STAGES+=("$a") ;;
    sfd-digits-a@[2-5]:[0-4]*|sfd-digits-b@[2-5]:[0-4]*|sfd-mnist16@[2-4]:[0-4]*|sfd-28@[23]:[0-4]*) STAGES+=("$a") ;;
    *) echo "error: unknown argument '$a'; use --dry-run and stage names (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ ${#STAGES[@]} -eq 0 ] && STAGES=(teachers sfd-digits-a sfd-digits-b sfd-mnist16 sfd-28 pd-search pd-confirm verdict)
case "$CELL28" in cpu|gpu) ;; *) echo "error: CELL28 must be cpu or gpu, got '$CELL28'" >&2; exit 2 ;; esac

# -- the frozen protocol (docs/confirmation.md; do not edit after results exist: add an amendment there instead) ----
SFD_BLOCK=1 PD_SEARCH_BLOCK=2 PD_BLOCK=3
SETTINGS=(--setting baseline:1 --setting 'bdense:4:end:0.6:uniform:targets=anchored-log')
SFD=(--seed-block $SFD_BLOCK --pool fresh --lr 2e-4 --eval-seeds 1000 --eval-points 0.125,0.25,0.5,0.75,1.0
     --teacher-solver dpmpp_3m --teacher-order-rule sfd "${SETTINGS[@]}")
# the faithful SFD teacher (issue 22): dynamic thresholding and the AFS history; required for a real run
if $BD compare --help 2>/dev/null | grep -q -- --teacher-threshold; then
  SFD+=(--teacher-threshold dynamic --teacher-history afs)
elif [ -z "$DRY" ]; then
  echo "error: this bdense has no --teacher-threshold/--teacher-history (the faithful SFD teacher of issue 22);" \
       "the protocol needs it: update bdense first" >&2
  exit 2
else
  echo "note: dry run without the faithful-teacher options (not in this bdense yet)"
fi
PD=(--method pd --start-steps 256 --end-steps 8 --batch 32 --last-step-target x-pred --weight-span round)
PD_GRID=("500 3e-4" "500 1e-4" "1000 3e-4" "1000 1e-4" "2000 3e-4" "2000 1e-4")  # cheapest first; first that passes

T=$R/teachers
say() { echo "== $(date -u +%H:%M:%S) $*"; }
run() { echo "+ $*"; if [ -z "$DRY" ]; then "$@"; fi; }
compare() {  # a compare command: checked with --dry-run in a dry run, else run (it resumes by itself)
  if [ -n "$DRY" ]; then echo "+ bdense compare $*"; $BD compare "$@" --dry-run; else $BD compare "$@"; fi
}
cell() {  # CELL NFES ARGS...: one SFD cell, or with SHARD set its NFE SHARD (and with SEEDIX those seeds) alone
  local root=$1 out=$1 nfes=$2 only=() sib; shift 2
  if [ -n "$SHARD" ]; then
    case ",$nfes," in *",$SHARD,"*) ;; *) echo "error: $root has no NFE $SHARD (its NFEs: $nfes)" >&2; exit 2 ;; esac
    out=$root-nfe$SHARD${SEEDIX:+-seeds${SEEDIX//,/+}} nfes=$SHARD
    if [ -n "$SEEDIX" ]; then only=(--only-seeds "$SEEDIX"); fi
    if [ -z "$DRY" ]; then  # one feature net per cell: a shard reuses the one a sibling shard trained
      mkdir -p "$out"
      for sib in "$root"-nfe*/features.safetensors; do
        if [ -f "$sib" ] && [ ! -f "$out/features.safetensors" ]; then cp "$sib" "$out/"; fi
      done
    fi
  fi
  local f kept  # a cell measured on several machines: its committed instrument (feature net, reference statistics)
  for f in features.safetensors ref-stats.npz; do  # so that every shard's FIDs are made with the same bytes
    kept=$KEPT/$(basename "$root")-$f
    if [ -f "$kept" ] && [ ! -f "$out/$f" ]; then run mkdir -p "$out"; run cp "$kept" "$out/$f"; fi
  done
  compare --out "$out" --nfe "$nfes" "$@" "${only[@]}"
  keep_results "$out" "$root"
}
RES=${RES:-benchmarks/confirm-results}  # committed copies of each cell's results (parts/*.json, a few KB a shard)
keep_results() {  # OUT CELL: copy a finished compare's parts into $RES/CELL/parts, to be committed: the verdict's
  local name; name=$(basename "$2")  # numbers survive a lost runs/ folder (the report's figures do not)
  if [ -z "$DRY" ] && [ -f "$1/results.json" ] && compgen -G "$1/parts/*.json" > /dev/null; then
    mkdir -p "$RES/$name/parts"; cp "$1"/parts/*.json "$RES/$name/parts/"
  fi
}
merge_shards() {  # CELL: copy the parts of CELL-nfe*/ into CELL (with what its report needs) once every shard finished
  local d=$1 s f shards=("$1"-nfe*); MERGED=""
  [ -d "${shards[0]}" ] || return 0
  for s in "${shards[@]}"; do
    [ -f "$s/results.json" ] || { echo "missing: $s (a shard that has not finished)"; return 0; }
  done
  run mkdir -p "$d/parts"
  for s in "${shards[@]}"; do run cp "$s"/parts/*.json "$d/parts/"; done
  for f in features.safetensors ref-stats.npz seed-block.json; do  # the same in every shard: the first one's
    if [ -f "${shards[0]}/$f" ] && [ ! -f "$d/$f" ]; then run cp "${shards[0]}/$f" "$d/"; fi
  done
  MERGED=1
}
KEPT=${KEPT:-benchmarks/confirm-teachers}  # the SFD cells' teachers, committed once trained (see teacher below)
teacher() {  # OUT ARGS...: train (or continue, or reuse) one teacher; an SFD cell's teacher is kept in $KEPT
  local out=$1 kept=$KEPT/$(basename "$1").safetensors; shift
  if [ -f "$out/model.safetensors" ]; then :
  elif [ -f "$kept" ]; then  # the committed bytes: training is not bit-identical across machines, and a cell may
    run mkdir -p "$out"; run cp "$kept" "$out/model.safetensors"  # span machines
  else
    local resume=(); [ -d "$out/checkpoints" ] && resume=(--resume)
    run $BD train-teacher --out "$out" "$@" "${resume[@]}"
  fi
  case $(basename "$out") in digits-s10[12])  # commit this copy: every later sitting distils the same teacher
    if [ -z "$DRY" ] && [ ! -f "$kept" ]; then mkdir -p "$KEPT"; cp "$out/model.safetensors" "$kept"; fi ;;
  esac
}
need_teacher() {  # PATH-OR-NAME: stop with one line when a teacher this stage needs is missing
  if [ -z "$DRY" ] && [ ! -f "$1" ] && [ ! -f "bdense/teachers/$1.safetensors" ]; then
    echo "error: teacher $1 is missing; run the teachers stage first (or ship bdense/teachers/$1.safetensors)" >&2; exit 3
  fi
}

for stage in "${STAGES[@]}"; do
  say "stage $stage"
  SHARD="" SEEDIX=""; case $stage in *@*) SHARD=${stage#*@}; stage=${stage%@*} ;; esac
  case $SHARD in *:*) SEEDIX=${SHARD#*:}; SHARD=${SHARD%%:*} ;; esac
  case $stage in
    teachers)
      teacher $T/digits-s101 --data digits --seed 101  # two new digits teachers: the demo's command, new seeds
      teacher $T/digits-s102 --data digits --seed 102
      teacher $T/digits-v-s101 --data digits --parameterization v --preset tiny --steps 4000 --batch 64 --lr 2e-3 \
        --seed 101 ;;
    sfd-digits-a|sfd-digits-b)
      t=$T/digits-s10$([ $stage = sfd-digits-a ] && echo 1 || echo 2)/model.safetensors
      need_teacher $t
      cell $R/$stage 2,3,4,5 --teacher $t --seeds 5 --trajectories 19200 --batch 64 "${SFD[@]}" ;;
    sfd-mnist16)  # the 16x16 cell; its teacher is fashion-mnist-16 (docs/confirmation.md, amendment 1)
      need_teacher fashion-mnist-16
      cell $R/sfd-mnist16 2,3,4 --teacher fashion-mnist-16 \
        --features bdense/teachers/features/fashion-mnist-16.safetensors --seeds 5 --trajectories 19200 --batch 64 \
        "${SFD[@]}" ;;
    sfd-28)
      need_teacher mnist-short
      if [ "$CELL28" = gpu ]; then
        cell $R/sfd-28-gpu 2,3 --teacher mnist-short --seeds 5 --trajectories 32000 --batch 128 \
          --device cuda "${SFD[@]}"
      else  # CPU-sized: 3 seeds and 5,120 trajectories (docs/confirmation.md says why), labelled so
        cell $R/sfd-28-cpu 2,3 --teacher mnist-short --seeds 3 --trajectories 5120 --batch 64 \
          "${SFD[@]}"
      fi ;;
    pd-search)
      need_teacher $T/digits-v-s101/model.safetensors
      for point in "${PD_GRID[@]}"; do
        read -r iters lr <<< "$point"
        out=$R/pd-search/i$iters-lr$lr
        compare --teacher $T/digits-v-s101/model.safetensors --out $out "${PD[@]}" --round-iters $iters --lr $lr \
          --seed-block $PD_SEARCH_BLOCK --seeds 2 --setting baseline:1 --eval-seeds 500 --eval-points 0.5,1.0
        if [ -z "$DRY" ] && $PY benchmarks/pd_budget.py $out; then
          echo "$iters $lr" > $R/pd-search/chosen.txt
          say "PD budget: $iters iterations per round, lr $lr"
          break
        fi
      done
      if [ -z "$DRY" ] && [ ! -f $R/pd-search/chosen.txt ]; then
        say "no budget of the grid makes K = 1 beat the teacher's DDIM: the PD confirmation is not run (plan, PD)"
      fi ;;
    pd-confirm)
      if [ -n "$DRY" ]; then read -r iters lr <<< "${PD_GRID[0]}"; else
        [ -f $R/pd-search/chosen.txt ] || { echo "PD confirmation skipped: no budget met the criterion" \
          "(pd-search stage; docs/confirmation.md)"; continue; }
        read -r iters lr < $R/pd-search/chosen.txt
      fi
      compare --teacher $T/digits-v-s101/model.safetensors --out $R/pd-confirm "${PD[@]}" --round-iters $iters \
        --lr $lr --seed-block $PD_BLOCK --seeds 5 --setting baseline:1 --setting bdense:2:uniform \
        --eval-seeds 1000 --eval-points 0.25,0.5,1.0 ;;
    verdict)  # regenerate every report from its run directories, then Holm over all pre-registered SFD cells
      cells=()
      for d in sfd-digits-a sfd-digits-b sfd-mnist16 sfd-28-$CELL28 pd-confirm; do
        merge_shards $R/$d
        if [ -f $R/$d/results.json ] || [ -n "$MERGED" ]; then
          run $BD compare --report-only --out $R/$d
          for s in $R/$d $R/$d-nfe*; do [ -d "$s" ] && keep_results "$s" $R/$d; done
        fi
        # the numbers: the committed parts (every shard finished on any machine), else this machine's folder
        if [ -d $RES/$d/parts ]; then src=$RES/$d; elif [ -f $R/$d/results.json ] || [ -n "$MERGED" ]; then src=$R/$d; else src=""; fi
        if [ -z "$src" ]; then
          echo "missing: $R/$d (its stage has not finished)"
        else
          case $d in sfd-*) cells+=("$d=$src") ;; esac
        fi
      done
      if [ ${#cells[@]} -gt 0 ]; then run $PY benchmarks/confirm_verdict.py --expect 26 "${cells[@]}"; fi ;;
  esac
done
say "done: ${STAGES[*]}"
