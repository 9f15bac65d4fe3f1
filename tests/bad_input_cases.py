"""The bad-input cases: one row per way to call bdense wrongly, and the generators that add a row for every writer
and every method-specific option. tests/test_bad_input.py runs them; `python tests/test_bad_input.py >
docs/bad-input.md` prints them as the docs table.

A row: (class, what is wrong, command line with {root} and file keys, text the one-line error must contain[, exit
code[, files the command may create or replace]]). A new command that writes needs a WRITER_BASE line; a new
method-specific option whose default is None needs an OPTION_VALUE.
"""
from __future__ import annotations

import torch

T = "{teacher}"
TT = "train-teacher --preset tiny --steps 1"
DIST = "distill --teacher {teacher} --out {root}/o"
CMP = "compare --teacher {teacher} --out {root}/c"
TUNE = "tune --teacher {teacher} --out {root}/t"
NO_CUDA = not torch.cuda.is_available()

# (class, what is wrong, command line with {root} and file keys, text the line must contain[, exit code[, files the
# command may create or replace]]). Classes follow issue 12: 1 code from data, 2 outputs over inputs, 3 non-finite
# models, 4 option values, 5 late failures (a grid checked only after work), 6 files named by relative path,
# 7 corrupt metadata and wrong file kinds, 8 precision, 9 data shape; 0 the cases of round one.
CASES = [
    # -- 0: round one ---------------------------------------------------------------------------------------
    (0, "truncated checkpoint", "sample {root}/truncated.safetensors --grid {root}/g.png", "truncated or corrupt"),
    (0, "file from another tool", "sample {root}/foreign.safetensors --grid {root}/g.png", "not a bdense model"),
    (0, "pickled checkpoint", "sample {root}/pickled.pt --grid {root}/g.png", "--trust-pickle"),
    (7, "a FIFO given as the model", "sample {root}/fifo --grid {root}/g.png", "not a regular file"),
    (0, "missing checkpoint", "sample {root}/nope.safetensors --grid {root}/g.png", "does not exist"),
    (0, "K-branch student used as a teacher", "distill --teacher {student} --out {root}/o", "export it first"),
    (0, "K the grid cannot serve", DIST + " --branches 3", "divides --teacher-substeps"),
    (0, "negative branch weight", DIST + " --branches 2 --branch-weights 1,-1", "positive"),
    (0, "wrong number of weights", DIST + " --branches 4 --branch-weights 1,1", "give exactly 4"),
    (0, "seeds that run backwards", "sample {teacher} --seeds 5-2 --grid {root}/g.png", "runs backwards"),
    (0, "PD with an EDM teacher", "distill --method pd --teacher {teacher} --out {root}/o", "VP"),
    (0, "PD teacher and data differ in resolution", "distill --method pd --teacher {t16} --out {root}/o --data digits",
     "expects"),
    (0, "data with NaNs", TT + " --data npz:{root}/nan.npz --out {root}/o", "NaN"),
    (0, "data out of range", TT + " --data npz:{root}/range.npz --out {root}/o", "[-1"),
    (0, "missing data file", TT + " --data npz:{root}/none.npz --out {root}/o", "does not exist"),
    (0, "unknown data set", TT + " --data cifar100 --out {root}/o", "digits"),
    (0, "run directory already holds a run", TT + " --data digits --out {root}/run", "--resume"),
    (0, "resume with different options", TT + " --data digits --out {root}/run --resume", "differ"),
    (0, "output directory inside a file", TT + " --data digits --out {root}/a-file/o", "is a file"),
    (0, "nothing to write", "sample {teacher}", "--grid"),
    # -- 1: code from a data folder, deserialisation ----------------------------------------------------------
    (1, "CIFAR batch with a planted object", "data info cifar10:{root}/cifar-evil", "refused global"),
    (1, "planted CIFAR batch used for training", TT + " --data cifar10:{root}/cifar-evil --out {root}/o",
     "refused global"),
    (1, "planted CIFAR batch for reference statistics", "fid ref --data cifar10:{root}/cifar-evil --extractor domain "
     "--features {root}/features.safetensors --out {root}/r.npz", "refused global"),
    (1, "CIFAR batch that is not a dict", "data info cifar10:{root}/cifar-list", "not a dict"),
    (1, "real-format CIFAR batches (valid)", "data info cifar10:{root}/cifar-good", "", 0),
    (1, "pickled object array in an npz", "data info npz:{root}/objects.npz", "cannot read"),
    (1, "pickled diffusers weights without --trust-pickle", "sample {root}/diffusers-pickle --grid {root}/g.png",
     "--trust-pickle"),
    # -- 2: outputs over inputs, existing files ----------------------------------------------------------------
    (2, "sample --npz over the model", "sample {teacher} --npz {teacher}", "inputs"),
    (2, "sample --grid over the model", "sample {teacher} --grid {teacher} --overwrite", "inputs"),
    (2, "sample --npz over an existing file", "sample {teacher} --npz {root}/existing.npz", "--overwrite"),
    (2, "sample --npz and --grid at one path", "sample {teacher} --npz {root}/x.npz --grid {root}/x.npz",
     "same file"),
    (2, "sample --npz is a directory", "sample {teacher} --npz {root}", "directory"),
    (2, "sample --npz onto a FIFO (as /dev/null)", "sample {teacher} --npz {root}/fifo --overwrite",
     "not a regular file"),
    (2, "sample --npz inside a file", "sample {teacher} --npz {root}/a-file/x.npz", "is a file"),
    (2, "sample --overwrite on an existing file (valid)", "sample {teacher} --seeds 0-1 --npz {root}/existing.npz "
     "--overwrite", "", 0, ("existing.npz",)),
    (2, "sample to a new file (valid)", "sample {teacher} --seeds 0-1 --npz {root}/new.npz", "", 0, ("new.npz",)),
    (2, "export over its own input", "export {student} --out {student}", "inputs"),
    (2, "export --overwrite over its own input", "export {student} --out {student} --overwrite", "inputs"),
    (2, "export over an existing file", "export {student} --out {teacher}", "--overwrite"),
    (2, "export to a new file (valid)", "export {student} --out {root}/exported.safetensors", "", 0,
     ("exported.safetensors",)),
    (2, "fid ref --out over its data", "fid ref --data npz:{root}/images.npz --extractor domain "
     "--features {root}/features.safetensors --out {root}/images.npz --overwrite", "inputs"),
    (2, "fid ref --out over its feature network", "fid ref --data digits --extractor domain "
     "--features {root}/features.safetensors --out {root}/features.safetensors --overwrite", "inputs"),
    (2, "fid ref --out over an existing file", "fid ref --data digits --extractor domain "
     "--features {root}/features.safetensors --out {root}/existing.npz", "--overwrite"),
    (2, "fid calc --out over its reference", "fid calc --ref {root}/stats.npz --samples {root}/images.npz "
     "--out {root}/stats.npz --overwrite", "inputs"),
    (2, "train-features --out over an existing file", "train-features --data digits --steps 1 "
     "--out {root}/existing.npz", "--overwrite"),
    (2, "agreement --out over the student", "agreement --model {student} --out {student} --overwrite", "inputs"),
    (2, "distill --out is the teacher's run directory", "distill --teacher {trun} --out {root}/trun",
     "would overwrite"),
    (2, "distill --out is the teacher file", "distill --teacher {teacher} --out {teacher}", "not a directory"),
    (2, "trajectories --out is the teacher file", "trajectories --teacher {teacher} --out {teacher}",
     "not a directory"),
    (2, "compare --out is the teacher file", "compare --teacher {teacher} --out {teacher}", "not a directory"),
    (2, "train-teacher --out is a file", TT + " --data digits --out {root}/a-file", "not a directory"),
    # -- 3: non-finite models --------------------------------------------------------------------------------
    (3, "sample a model with a NaN weight", "sample {root}/nan.safetensors --grid {root}/g.png", "conv_out.weight"),
    (3, "sample a model with an Inf weight", "sample {root}/inf.safetensors --grid {root}/g.png", "NaN or Inf"),
    (3, "distill from a NaN teacher", "distill --teacher {root}/nan.safetensors --out {root}/o", "NaN or Inf"),
    (3, "PD from a NaN teacher", "distill --method pd --teacher {root}/nan-vp.safetensors --out {root}/o",
     "conv_in.bias"),
    (3, "trajectories from a NaN teacher", "trajectories --teacher {root}/nan.safetensors --out {root}/o",
     "NaN or Inf"),
    (3, "compare a NaN teacher", "compare --teacher {root}/nan.safetensors --out {root}/c", "NaN or Inf"),
    (3, "export a NaN model", "export {root}/nan.safetensors --out {root}/e.safetensors", "NaN or Inf"),
    (3, "FID of a NaN model", "fid calc --ref {root}/stats.npz --model {root}/nan.safetensors", "NaN or Inf"),
    (3, "agreement with a NaN teacher", "agreement --model {student} --teacher {root}/nan.safetensors",
     "NaN or Inf"),
    # -- 4: option values ------------------------------------------------------------------------------------
    (4, "train-teacher --steps 0", TT.replace("--steps 1", "--steps 0") + " --out {root}/o", "--steps"),
    (4, "SFD's thresholding asked of a heun teacher", "distill --teacher {teacher} --teacher-solver heun "
     "--teacher-threshold dynamic --out {root}/o --dry-run", "--teacher-threshold dynamic applies to a dpmpp teacher"),
    (4, "SFD's AFS history asked of an euler teacher", "trajectories --teacher {teacher} --teacher-solver euler "
     "--teacher-history afs --count 8 --out {root}/o", "--teacher-history afs applies to a dpmpp teacher"),
    (4, "an unknown teacher order rule", "distill --teacher {teacher} --teacher-order-rule sdf --out {root}/o "
     "--dry-run", "--teacher-order-rule"),
    (4, "sample --threshold with a solver that keeps no x0 history", "sample {teacher} --solver heun --threshold "
     "dynamic --grid {root}/g.png", "threshold=dynamic: only the dpmpp solvers take this"),
    (4, "train-teacher --batch 0", TT + " --batch 0 --out {root}/o", "--batch"),
    (4, "train-teacher --lr -1", TT + " --lr -1 --out {root}/o", "--lr"),
    (4, "train-teacher --lr nan", TT + " --lr nan --out {root}/o", "finite"),
    (4, "train-teacher --ema-decay 2", TT + " --ema-decay 2 --out {root}/o", "--ema-decay"),
    (4, "train-teacher --resolution 0", TT + " --resolution 0 --out {root}/o", "--resolution"),
    (4, "train-teacher --seed -1", TT + " --seed -1 --out {root}/o", "--seed"),
    (4, "train-teacher --seed above 2^64", TT + " --seed 18446744073709551617 --out {root}/o", "--seed"),
    (4, "train-teacher --log-every 0", TT + " --log-every 0 --out {root}/o", "--log-every"),
    (4, "train-teacher --checkpoint-every -5", TT + " --checkpoint-every -5 --out {root}/o", "--checkpoint-every"),
    (4, "train-teacher --precision fp8", TT + " --precision fp8 --out {root}/o", "fp32"),
    (4, "train-teacher --parameterization foo", TT + " --parameterization foo --out {root}/o", "edm"),
    (4, "train-teacher --pad zero", TT + " --pad zero --out {root}/o", "--pad"),
    (4, "train-teacher --steps abc", TT.replace("--steps 1", "--steps abc") + " --out {root}/o", "valid integer"),
    (4, "unknown option", "sample {teacher} --colour red", "No such option"),
    (4, "sample --batch 0", "sample {teacher} --batch 0 --grid {root}/g.png", "--batch"),
    (4, "sample --seeds 0-99999999999", "sample {teacher} --seeds 0-99999999999 --grid {root}/g.png", "more than"),
    (4, "sample --seeds above 2^64", "sample {teacher} --seeds 18446744073709551616 --grid {root}/g.png", "2^63"),
    (4, "sample --seeds abc", "sample {teacher} --seeds abc --grid {root}/g.png", "cannot read"),
    (4, "sample --nfe 0", "sample {teacher} --nfe 0 --grid {root}/g.png", "--nfe"),
    (4, "sample --solver rk4", "sample {teacher} --solver rk4 --grid {root}/g.png", "euler"),
    (4, "sample --schedule cosine", "sample {teacher} --schedule cosine --grid {root}/g.png", "polynomial"),
    (4, "sample --device tpu", "sample {teacher} --device tpu --grid {root}/g.png", "cpu"),
    (4, "distill --nfe 0", DIST + " --nfe 0", "--nfe"),
    (4, "distill --nfe 9", DIST + " --nfe 9", "--nfe"),
    (4, "distill --batch 0", DIST + " --batch 0", "--batch"),
    (4, "distill --lr 0 (0 is not the default)", DIST + " --lr 0", "--lr"),
    (4, "distill --branches 0", DIST + " --branches 0", "--branches"),
    (4, "distill --trajectories 0", DIST + " --trajectories 0", "--trajectories"),
    (4, "distill --teacher-substeps 0", DIST + " --teacher-substeps 0", "--teacher-substeps"),
    (4, "distill --trajectories below one batch", DIST + " --trajectories 10 --batch 128", "smaller than one"),
    (4, "extra field in a decay weight spec", DIST + " --branches 2 --branch-weights decay:linear:0.1:0-1:junk",
     "extra fields"),
    (4, "extra field in an end weight spec", DIST + " --branches 2 --branch-weights end:0.5:linear:x", "cannot read"),
    (4, "empty field in a weight list", DIST + " --branches 2 --branch-weights 1,,1", "cannot read"),
    (4, "distill --method pd --end-steps above --start-steps", "distill --method pd --teacher {vp8} --out {root}/o "
     "--start-steps 8 --end-steps 16", "--end-steps"),
    (4, "distill --method foo", DIST + " --method foo", "sfd"),
    (4, "distill --branch-heads wide", DIST + " --branches 2 --branch-heads wide", "shared"),
    (4, "trajectories --shard-size 0", "trajectories --teacher {teacher} --out {root}/o --shard-size 0",
     "--shard-size"),
    (4, "trajectories --shard-size not a multiple of --batch", "trajectories --teacher {teacher} --out {root}/o "
     "--shard-size 100 --batch 64", "multiple"),
    (4, "trajectories --count 0", "trajectories --teacher {teacher} --out {root}/o --count 0", "--count"),
    (4, "trajectories --dtype fp16", "trajectories --teacher {teacher} --out {root}/o --dtype fp16", "bf16"),
    (4, "compare --nfe abc", CMP + " --nfe abc", "cannot read --nfe"),
    (4, "compare --nfe 2,2", CMP + " --nfe 2,2", "distinct"),
    (4, "compare --nfe 0", CMP + " --nfe 0", "--nfe"),
    (4, "tune --seed beyond optuna's 32 bits", TUNE + " --seed 1099511627776", "--seed"),
    (4, "tune --objective combo:2", TUNE + " --objective combo:2", "combo:A"),
    (4, "tune --jobs 0", TUNE + " --jobs 0", "--jobs"),
    (4, "tune --apply with the wrong count", TUNE + " --apply 1,2", "give exactly 4"),
    (4, "fid ref --max 0", "fid ref --data digits --out {root}/r.npz --max 0", "--max"),
    (4, "fid ref --extractor foo", "fid ref --data digits --out {root}/r.npz --extractor foo", "inception"),
    (4, "fid calc --frechet foo", "fid calc --ref {root}/stats.npz --samples {root}/images.npz --frechet foo",
     "sqrtm"),
    (4, "fid calc --nfe 0", "fid calc --ref {root}/stats.npz --model {teacher} --nfe 0", "--nfe"),
    (4, "train-features --steps 0", "train-features --data digits --steps 0 --out {root}/f.safetensors", "--steps"),
    (4, "agreement --teacher-nfe 0", "agreement --model {student} --teacher-nfe 0", "--teacher-nfe"),
    (4, "data info --resolution 0", "data info digits --resolution 0", "--resolution"),
    # -- 5: a grid checked in full before any work -----------------------------------------------------------
    (5, "compare --seeds 0", CMP + " --seeds 0", "--seeds"),
    (5, "compare --eval-points with 0", CMP + " --eval-points 0,1", "(0, 1]"),
    (5, "compare --eval-points 1.5", CMP + " --eval-points 0.5,1.5", "(0, 1]"),
    (5, "compare --eval-seeds 1", CMP + " --eval-seeds 1", "--eval-seeds"),
    (5, "compare setting with a K that does not divide the sub-steps", CMP + " --setting baseline:1 --setting b:3",
     "K = 3 branches cannot split the 4 teacher sub-steps of each student interval evenly; use a K that divides 4 "
     "(1, 2, 4)"),  # compare has no --teacher-substeps: the fix it names must be one it takes
    (5, "tune --branches 3 (does not divide the sub-steps)", TUNE + " --branches 3", "use a K that divides 4 (1, 2, 4)"),
    (5, "compare SFD-v setting with a K that does not divide the sub-steps",
     CMP + " --nfe 2,3 --setting baseline:1 --setting v:3:2-3", "use a K that divides 4 (1, 2, 4)"),
    (5, "compare first setting not the baseline", CMP + " --setting bdense:4", "baseline"),
    (5, "compare setting with heads=wide", CMP + " --setting baseline:1 --setting b:2:heads=wide",
     "heads must be shared or block"),
    (5, "compare setting with the wrong weight count", CMP + " --setting baseline:1 --setting b:2:1,1,1",
     "give exactly 2"),
    (5, "compare duplicate setting names", CMP + " --setting baseline:1 --setting baseline:2", "unique"),
    (5, "compare setting name with a slash", CMP + " --setting baseline:1 --setting ../x:2", "directory name"),
    (5, "compare --trajectories below one batch", CMP + " --trajectories 10", "smaller than one"),
    (5, "compare a K-branch student as the teacher", "compare --teacher {student} --out {root}/c", "export it first"),
    (5, "compare --method pd with an EDM teacher", CMP + " --method pd", "VP teacher"),
    (5, "compare --method pd with K = 4", "compare --method pd --teacher {vp8} --out {root}/c --setting baseline:1 "
     "--setting b:4", "--branches 1"),
    (5, "compare --method pd with an SFD target mode", "compare --method pd --teacher {vp8} --out {root}/c --setting "
     "baseline:1 --setting a:2:uniform:targets=anchored", "SFD options"),
    (5, "compare --method pd --end-steps above --start-steps", "compare --method pd --teacher {vp8} --out {root}/c "
     "--start-steps 8 --end-steps 16", "--end-steps"),
    (5, "compare --method pd --start-steps not a power of two", "compare --method pd --teacher {vp8} --out {root}/c "
     "--start-steps 48", "powers of two"),
    (4, "compare --method foo", CMP + " --method foo", "sfd"),
    (4, "distill --method pd --last-step-target foo", "distill --method pd --teacher {vp8} --out {root}/o "
     "--last-step-target foo", "x-pred"),
    (4, "compare --method pd --weight-span foo", "compare --method pd --teacher {vp8} --out {root}/c "
     "--weight-span foo", "round"),
    (4, "distill --method pd --student-param y", "distill --method pd --teacher {vp8} --out {root}/o "
     "--student-param y", "auto, eps, x, v"),
    (4, "distill --student-param with --method sfd", DIST + " --student-param v", "--method pd"),
    (4, "compare --student-param with --method sfd", CMP + " --student-param x", "--method pd"),
    (5, "tune --trials 0", TUNE + " --trials 0", "--trials"),
    (5, "tune --method pd with K = 4", "tune --method pd --teacher {vp8} --out {root}/t --branches 4", "K = 2"),
    (5, "tune --method pd --trial-round-iters above --round-iters", "tune --method pd --teacher {vp8} --out {root}/t "
     "--round-iters 4 --trial-round-iters 8", "exceeds --round-iters"),
    (5, "tune --method pd with an EDM teacher", TUNE + " --method pd", "VP teacher"),
    (5, "tune --report-points 0", TUNE + " --report-points 0", "(0, 1]"),
    (5, "tune --branches 1", TUNE + " --branches 1", "--branches"),
    (5, "tune --trial-trajectories above --trajectories", TUNE + " --trial-trajectories 99999", "exceeds"),
    (5, "tune --final-nfe 9", TUNE + " --final-nfe 2,9", "--final-nfe"),
    # -- 6: files named by relative path ---------------------------------------------------------------------
    (6, "student whose teacher is not found", "agreement --model {moved} --seeds 0-1", "pass --teacher"),
    (6, "student whose teacher has changed", "agreement --model {changed} --seeds 0-1", "has changed"),
    (6, "student naming its teacher relative to itself (valid)", "agreement --model {student} --seeds 0-1", "", 0),
    (6, "statistics whose feature network is not found", "fid calc --ref {root}/stats-moved/stats.npz "
     "--samples {root}/images.npz", "would not match"),
    (6, "statistics naming their feature network (valid)", "fid calc --ref {root}/stats.npz "
     "--samples {root}/images.npz", "", 0),
    # -- 7: corrupt metadata, wrong kinds of file ------------------------------------------------------------
    (7, "invalid JSON in a safetensors header", "sample {root}/badjson.safetensors --grid {root}/g.png",
     "invalid JSON"),
    (7, "a JSON list as the model config", "sample {root}/listconfig.safetensors --grid {root}/g.png",
     "not an object"),
    (7, "a model config without its network", "sample {root}/noconfig.safetensors --grid {root}/g.png",
     "corrupt or was edited"),
    (7, "a sampling recipe with a word for its NFE", "sample {root}/badrecipe.safetensors --grid {root}/g.png",
     "'nfe': 'many'"),
    (7, "a sampling recipe with an unknown field", "sample {root}/extrarecipe.safetensors --grid {root}/g.png",
     "recipe is corrupt"),
    (7, "a config asking for 10^6 px images", "sample {root}/huge.safetensors --grid {root}/g.png",
     "impossible model shape"),
    (7, "a .npy given as npz:", "data info npz:{root}/images.npy", ".npy file"),
    (7, "a text file given as npz:", "data info npz:{root}/notzip.npz", "no zip header"),
    (7, "NaN in reference statistics", "fid calc --ref {root}/stats-nan.npz --samples {root}/images.npz", "NaN"),
    (7, "invalid JSON in reference statistics", "fid calc --ref {root}/stats-badjson.npz --samples {root}/images.npz",
     "invalid JSON"),
    (7, "a model given as reference statistics", "fid calc --ref {teacher} --samples {root}/images.npz",
     "not a bdense FID statistics file"),
    (7, "a K-branch student given to trajectories", "trajectories --teacher {student} --out {root}/o", "branches"),
    (7, "a model given as the feature network", CMP + " --features {teacher}", "not a bdense feature network"),
    (7, "invalid JSON in a trajectory cache", DIST + " --trajectories-from {root}/cache-bad", "invalid JSON"),
    (7, "invalid JSON in a diffusers config", "sample {root}/diffusers-bad --grid {root}/g.png", "invalid JSON"),
    (7, "invalid JSON in a run's options", TT + " --data digits --out {root}/badrun --resume", "invalid JSON"),
    # -- 8: precision ----------------------------------------------------------------------------------------
    (8, "fp16 on a CPU", TT + " --data digits --out {root}/o --precision fp16 --device cpu", "needs a GPU"),
    # -- 9: what shaped the data travels with the teacher ----------------------------------------------------
    (9, "feature network at another resolution than the teacher", "compare --teacher {t16} --out {root}/c "
     "--features {root}/features.safetensors", "--resolution 16"),
    (9, "reference statistics of another resolution", "fid calc --ref {root}/stats.npz --model {t16}", "8px"),
    (9, "agreement against a teacher of another resolution", "agreement --model {student} --teacher {t16} "
     "--seeds 0-1", "the student makes 1x8px images, the teacher 1x16px"),
    (9, "train-features at a teacher's resolution (valid)", "train-features --data digits --resolution 16 --pad pad "
     "--steps 1 --out {root}/f16.safetensors", "", 0, ("f16.safetensors",)),
    (9, "a resolution the preset cannot divide", "train-teacher --data digits --preset mnist --resolution 10 "
     "--steps 1 --out {root}/o", "not divisible"),
    (9, "padding down", TT + " --data digits --resolution 4 --pad pad --out {root}/o", "cannot pad"),
    # -- SFD-v: one student for several NFE (docs/sfdv.md) ------------------------
    (4, "distill --nfe range that runs backwards", DIST + " --nfe 5-2", "runs backwards"),
    (4, "distill --nfe range beyond 8", DIST + " --nfe 2-9", "--nfe"),
    (4, "distill --nfe list with a repeat", DIST + " --nfe 2,3,3", "distinct"),
    (4, "distill --nfe-draw foo", DIST + " --nfe 2-5 --nfe-draw foo", "--nfe-draw"),
    (5, "distill --nfe 2-5 with fewer iterations than counts", DIST + " --nfe 2-5 --trajectories 384 --batch 128",
     "never draw NFE"),
    (5, "distill --nfe 2-3 from a folder without per-NFE caches", DIST + " --nfe 2-3 --trajectories-from {root}",
     "no cache for NFE 2"),
    (4, "trajectories --nfe 0-3", "trajectories --teacher {teacher} --out {root}/o --nfe 0-3", "--nfe"),
    (4, "sample an SFD-v student at an NFE it was not trained for", "sample {sfdv} --nfe 4 --grid {root}/g.png",
     "not --nfe 4"),
    (2, "sample an SFD-v student at one of its NFE (valid)", "sample {sfdv} --nfe 2 --seeds 0-1 --npz {root}/v.npz",
     "", 0, ("v.npz",)),
    (4, "export an SFD-v student to diffusers without --nfe", "export {sfdv} --format diffusers --out {root}/d",
     "pass --nfe"),
    (4, "export an SFD-v student for an NFE it was not trained for", "export {sfdv} --nfe 5 --out {root}/e.safetensors",
     "not --nfe 5"),
    (4, "export --nfe of a single-NFE student", "export {student} --nfe 3 --out {root}/e.safetensors", "drop --nfe"),
    (7, "a step-count embedding with one count", "sample {root}/sfdv-corrupt.safetensors --grid {root}/g.png",
     "is corrupt"),
    # -- shipped teachers -------------------------------------------------------------------------------------
    (4, "teachers pack: a name that is not a short name", "teachers pack {teacher} --name Bad/Name --out {root}/tp",
     "must be lower-case"),
    (4, "teachers pack --check-seeds -1", "teachers pack {teacher} --name ok --check-seeds -1 --out {root}/tp",
     "--check-seeds"),
    (4, "teachers list (valid)", "teachers list", "", 0, ()),
]
# -- issue 26, handwritten: 10 destroys what exists, 11 a run directory that does not defend itself, 12 an option
# of another method, 13 relabelled numbers, 14 damaged or foreign artefacts, 16 tracebacks and wrong advice (15,
# interrupts, needs a signal: tests/test_hostile_classes.py). The registry-driven rows follow (writer_cases,
# option_cases).
PACK = "teachers pack {teacher} --check-seeds 1"
CASES += [
    (10, "export --format diffusers into a folder of the user's files", "export {student} --format diffusers "
     "--out {root}/userdir", "not empty"),
    (10, "export --format diffusers --overwrite over the folder holding its input", "export {trun} --format "
     "diffusers --out {root}/trun --overwrite", "holds this command's input"),
    (10, "teachers pack over its own input", "teachers pack {trun} --name model --out {root}/trun", "inputs"),
    (10, "teachers pack over a teacher already on the shelf", PACK + " --name mnist --out {root}/shelf",
     "--overwrite"),
    (10, "teachers pack --overwrite over its own input", "teachers pack {teacher} --name teacher --out {root} "
     "--overwrite", "inputs"),
    (10, "sample --outdir --overwrite over the folder holding the model", "sample {trun} --outdir {root}/trun "
     "--overwrite", "holds this command's input"),
    (10, "sample --outdir into a folder of the user's files", "sample {teacher} --outdir {root}/userdir",
     "--overwrite"),
    (10, "train-teacher --out inside its folder: data set", TT + " --data folder:{root}/imgs --out {root}/imgs/run",
     "inside"),
    (10, "train-teacher --out is its folder: data set", TT + " --data folder:{root}/imgs --out {root}/imgs",
     "imgs"),
    (11, "a finished teacher whose checkpoints/ was deleted, rerun", TT + " --data digits --out {root}/done-run",
     "already holds a run"),
    (11, "a finished student whose options.json was deleted", DIST.replace("{root}/o", "{root}/noopts-run"),
     "bdense did not write"),
    (11, "--resume of a folder without options.json", DIST.replace("{root}/o", "{root}/noopts-run") + " --resume",
     "bdense did not write"),
    (11, "a run killed before its first checkpoint, restarted with other options",
     TT + " --data digits --out {root}/started-run", "differ"),
    (11, "--resume into a folder of the user's files", TT + " --data digits --out {root}/userdir --resume",
     "bdense did not write"),
    (12, "distill --method pd --nfe 2-5", "distill --method pd --teacher {vp8} --out {root}/o --nfe 2-5",
     "--nfe is used only with --method sfd"),
    (12, "distill --method pd --branch-heads block", "distill --method pd --teacher {vp8} --out {root}/o "
     "--branch-heads block", "--branch-heads is used only with --method sfd and --branches > 1"),
    (12, "compare --method pd --pool fresh", "compare --method pd --teacher {vp8} --out {root}/c --pool fresh",
     "--pool is used only with --method sfd"),
    (12, "distill --nfe-draw iid with one NFE", DIST + " --nfe-draw iid", "several --nfe"),
    (12, "distill --branch-weights ramp with K = 1", DIST + " --branch-weights ramp", "--branches > 1"),
    (13, "compare continued with another feature network", "compare --teacher {teacher} --out {root}/cmp-protocol "
     "--features {root}/features.safetensors", "another protocol"),
    (13, "compare over reference statistics of another feature network", "compare --teacher {teacher} "
     "--out {root}/cmp-ref --features {root}/features.safetensors", "another protocol"),
    (14, "a diffusers export with one NaN in its UNet", "sample {root}/exp-nan --grid {root}/g.png", "NaN or Inf"),
    (14, "a diffusers export without bdense.json", "sample {root}/exp-nojson --grid {root}/g.png",
     "without its bdense.json"),
    (14, "a bdense.json without net", "sample {root}/exp-nonet --grid {root}/g.png", "field(s) net"),
    (14, "a diffusers export (valid)", "sample {root}/exp-good --seeds 0-1 --grid {root}/g.png", "", 0, ("g.png",)),
    (14, "an SFD-v student exported for NFE 3, sampled at NFE 2", "sample {sfdv3} --nfe 2 --grid {root}/g.png",
     "exported for NFE 3"),
    (14, "an SFD-v student exported for NFE 3, at its own NFE (valid)", "sample {sfdv3} --seeds 0-1 "
     "--grid {root}/g.png", "", 0, ("g.png",)),
    (14, "a teacher whose sigma_max is below sigma_min", "sample {root}/badsigma.safetensors --grid {root}/g.png",
     "badsigma.safetensors: sigma range"),
    (14, "a cache shard replaced by a copy of another", DIST + " --trajectories-from {root}/cache-swap "
     "--trajectories 16 --batch 8", "copied over another"),
    (14, "a cache shard cut short", DIST + " --trajectories-from {root}/cache-cut --trajectories 16 --batch 8",
     "truncated or corrupt"),
    (16, "tune over a cut optuna.db", "tune --teacher {teacher} --out {root}/tune-bad "
     "--features {root}/features.safetensors", "cannot be opened as an Optuna study"),
    (16, "branch weights of 1e308", DIST + " --branches 2 --branch-weights 1e308,1", "must each lie in"),
    (16, "branch weights of 1e-308", DIST + " --branches 2 --branch-weights sum1:1e-308,1", "must each lie in"),
]

# the commands that write, each without its output option: a new writer fails test_every_writer_has_a_base until
# it has a line here, and is then driven through the output guard by writer_cases
WRITER_BASE = {
    "train-teacher": TT + " --data digits", "sample": "sample {teacher} --seeds 0-1",
    "distill": "distill --teacher {teacher}", "trajectories": "trajectories --teacher {teacher} --count 8 --batch 8 "
    "--shard-size 8", "compare": "compare --teacher {teacher}", "tune": "tune --teacher {teacher}",
    "export": "export {student}", "train-features": "train-features --data digits --steps 1",
    "agreement": "agreement --model {student} --seeds 0-1",
    "fid ref": "fid ref --data digits --extractor domain --features {root}/features.safetensors",
    "fid calc": "fid calc --ref {root}/stats.npz --samples {root}/images.npz", "teachers pack": PACK + " --name x",
}
OUTPUT_OPTIONS = ("out", "outdir", "npz", "grid", "npz_adm")  # the option names of every output
FOLDER_SHELVES = {("teachers pack", "--out")}  # folders that collect named files: their guard is per name
# the commands with --method, without the options the table rules on; a value for options whose default is None
OPTION_BASE = {"distill": DIST, "compare": CMP, "tune": TUNE}
OPTION_VALUE = {"trajectory_cache": "{root}/cache-swap", "dense_intervals": "1", "trajectories": "256",
                "trial_round_iters": "2", "final_nfe": "2", "branch_weights": "uniform", "data": "digits",
                "round_iters": "2", "trial_trajectories": "256"}


def cli_commands() -> dict:
    """{'name' or 'group name': click command} of the whole bdense CLI."""
    from bdense.cli import command
    found = {}
    for name, cmd in command().commands.items():
        subs = getattr(cmd, "commands", None)
        found.update({f"{name} {s}": c for s, c in subs.items()} if subs else {name: cmd})
    return found


def writers() -> list[tuple[str, str]]:
    return [(name, p.opts[0]) for name, cmd in cli_commands().items() for p in cmd.params if p.name in OUTPUT_OPTIONS]


def writer_cases() -> list:
    """Every output option of every command onto a file bdense did not write and into a folder of the user's files:
    refused, nothing changed (class 10)."""
    rows = []
    for name, flag in writers():
        base = WRITER_BASE.get(name, f"MISSING-WRITER-BASE {name}")
        rows.append((10, f"{name} {flag} onto a file bdense did not write", f"{base} {flag} {{root}}/existing.npz",
                     "existing.npz"))
        if (name, flag) not in FOLDER_SHELVES:
            rows.append((10, f"{name} {flag} into a folder of the user's files", f"{base} {flag} {{root}}/userdir",
                         "userdir"))
    return rows


def option_cases() -> list:
    """Every option of the method table, given where its method (K, NFE list) does not use it: refused (class 12)."""
    from bdense.options import METHOD_COMMANDS, uses_for
    rows = []
    commands = cli_commands()
    for name in METHOD_COMMANDS:
        for p in commands[name].params:
            u = uses_for(name, p.name)
            if u is None:
                continue
            value = p.opts[0] if p.is_flag else f"{p.opts[0]} {OPTION_VALUE.get(p.name, p.default)}"
            rows.append((12, f"{name} {p.opts[0]} where only {u.says} uses it", f"{OPTION_BASE[name]} {u.elsewhere} "
                         f"{value}", f"{p.opts[0]} is used only with {u.says}"))
    return rows


CASES += writer_cases() + option_cases()
if NO_CUDA:
    CASES.append((7, "--device cuda without CUDA", "sample {teacher} --device cuda --grid {root}/g.png",
                  "CUDA is not available"))

CLASSES = {0: "round one", 1: "code from a data folder", 2: "an output over an input", 3: "non-finite model",
           4: "option value", 5: "late failure", 6: "file named by relative path", 7: "corrupt metadata or wrong kind",
           8: "precision", 9: "data shape", 10: "destroys what exists", 11: "run directory", 12: "option of another "
           "method", 13: "relabelled numbers", 14: "damaged or foreign artefact", 16: "traceback or wrong advice"}
