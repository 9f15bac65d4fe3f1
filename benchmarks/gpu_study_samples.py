"""Write the samples that Inception FID needs, so that it can be computed later on a CPU (the 87 MB Inception
weights do not travel to the GPU machine): the teacher with its own recipe (seeds 0..N-1), and every final
student of one or more `bdense compare` directories on the comparison's held-out evaluation seeds.

    python3 benchmarks/gpu_study_samples.py --teacher T --compare DIR [DIR ...] --out OUTDIR \
        --teacher-seeds 10000 --eval-seeds 2000

OUTDIR/samples-teacher.npz is a `bdense sample --npz` file (`bdense fid calc --samples` reads it);
OUTDIR/samples-students.npz holds one uint8 NHWC array per run, keyed `nfe2/baseline/seed0`, plus `_meta`
(JSON: seeds, recipes, run directories); benchmarks/gpu_study_fid.py turns both into a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bdense.data.images import save_npz  # noqa: E402
from bdense.studies.compare import EVAL_SEED_BASE  # noqa: E402
from bdense.models.checkpoint import load_model  # noqa: E402
from bdense.sampling.sample import model_recipe, sample_uint8  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--compare", nargs="*", default=[], help="bdense compare output directories (results.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--teacher-seeds", type=int, default=10000)
    p.add_argument("--eval-seeds", type=int, default=2000, help="first N of the comparison's held-out seeds")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--max-mib", type=float, default=15.5, help="warn when a file is larger (what comes back: 16 MiB)")
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    teacher = load_model(args.teacher, device=dev)
    recipe = model_recipe(teacher)
    arr, labels, _ = sample_uint8(teacher, list(range(args.teacher_seeds)), recipe, batch_size=args.batch, device=dev)
    files = [save_npz(arr, out / "samples-teacher.npz", seeds=np.arange(args.teacher_seeds),
                      **({"labels": labels} if labels is not None else {}))]
    print(f"teacher: {len(arr)} samples ({recipe.solver} {recipe.nfe} NFE) in {time.time() - t0:.1f} s", flush=True)
    seeds = [EVAL_SEED_BASE + i for i in range(args.eval_seeds)]
    arrays, meta = {}, {"eval_seeds": f"{seeds[0]}-{seeds[-1]}", "teacher": str(args.teacher), "runs": {}}
    for cdir in args.compare:
        res_file = Path(cdir) / "results.json"
        if not res_file.exists():
            print(f"{cdir}: no results.json (the comparison did not finish); skipped", flush=True)
            continue
        results = json.loads(res_file.read_text())
        for nfe, entry in results["nfe"].items():
            for setting, per_seed in entry["runs"].items():
                for seed, run in per_seed.items():
                    model_file = Path(run["dir"]) / "model.safetensors"
                    if not model_file.exists():
                        continue
                    student = load_model(model_file, device=dev)
                    r = model_recipe(student)
                    imgs, _, _ = sample_uint8(student, seeds, r, batch_size=args.batch, device=dev)
                    key = f"nfe{nfe}/{setting}/seed{seed}"
                    arrays[key] = imgs
                    meta["runs"][key] = {"dir": str(run["dir"]), "recipe": r.to_dict(),
                                         "branches": student.branches}
    if arrays:
        path = out / "samples-students.npz"
        with open(path, "wb") as fh:
            np.savez_compressed(fh, _meta=np.array(json.dumps(meta)), **arrays)
        files.append(path)
    print(f"students: {len(arrays)} runs x {len(seeds)} held-out seeds in {time.time() - t0:.1f} s", flush=True)
    for f in files:
        mib = f.stat().st_size / 2**20
        print(f"  {f.name}: {mib:.1f} MiB{'  (TOO LARGE to come back: lower the seed counts)' if mib > args.max_mib else ''}")


if __name__ == "__main__":
    main()
