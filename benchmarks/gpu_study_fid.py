"""Inception FID of the GPU study's samples, on the CPU (the Inception weights stay here): the teacher row and
the baseline-vs-B-DENSE table with 95% t-intervals over training seeds and paired verdicts.

    bdense fid ref --data mnist --out runs/mnist-inception.npz          # once (~19 min for 10k images on 2 cores)
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gpu_study_fid.py --ref runs/mnist-inception.npz \
        --dir /path/to/files_at --max 2000

--dir holds samples-teacher.npz and samples-students.npz from benchmarks/gpu_study_samples.py. On this CPU
Inception runs at ~9 images/s: 13 models x 2,000 images ~ 50 min. --json FILE also writes the scores.
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

from bdense.metrics.fid import extractor_for, feature_stats, frechet_distance, load_stats  # noqa: E402
from bdense.metrics.stats import fmt, paired_verdict, t_interval  # noqa: E402


def fid_of(uint8_nhwc: np.ndarray, ext, ref, batch: int = 100) -> float:
    x = torch.from_numpy(uint8_nhwc).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    st = feature_stats(ext, x.split(batch))
    return frechet_distance(st.mu, st.sigma, ref["mu"], ref["sigma"], method="eigvals")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="reference statistics (bdense fid ref)")
    p.add_argument("--dir", required=True, help="folder with samples-teacher.npz / samples-students.npz")
    p.add_argument("--max", type=int, default=2000, help="images per model (the same for every row)")
    p.add_argument("--json", default=None, help="also write the scores here")
    p.add_argument("--features", default=None, help="domain feature network, if --ref is a domain reference")
    args = p.parse_args()
    ref = load_stats(args.ref)
    ext = extractor_for(ref, features=args.features)
    d = Path(args.dir)
    scores, t0 = {}, time.time()
    tfile = d / "samples-teacher.npz"
    if tfile.exists():
        with np.load(tfile) as z:
            scores["teacher"] = fid_of(z["images"][:args.max], ext, ref)
        print(f"teacher (own recipe): FID {scores['teacher']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    sfile = d / "samples-students.npz"
    meta = {}
    if sfile.exists():
        with np.load(sfile) as z:
            meta = json.loads(str(z["_meta"]))
            for key in sorted(k for k in z.files if k != "_meta"):
                scores[key] = fid_of(z[key][:args.max], ext, ref)
                print(f"{key}: FID {scores[key]:.3f} ({time.time() - t0:.0f} s)", flush=True)
    print(f"\n### FID ({ext.name}), {args.max} images per model, reference {ref['path']} "
          f"(n={ref['n']}); students on held-out seeds {meta.get('eval_seeds', '?')}\n")
    print("| NFE | setting | FID (mean ± 95% CI over training seeds) | verdict vs baseline (paired) |")
    print("|---|---|---|---|")
    if "teacher" in scores:
        print(f"| - | teacher (own recipe) | {scores['teacher']:.4g} | |")
    runs: dict = {}
    for key, v in scores.items():
        if key.count("/") == 2:
            nfe, setting, seed = key.split("/")
            runs.setdefault(nfe, {}).setdefault(setting, {})[seed] = v
    for nfe, settings in runs.items():
        base_name = next((s for s in settings if s.startswith("baseline")), next(iter(settings)))
        base = settings[base_name]
        for s, per_seed in settings.items():
            verdict = ""
            if s != base_name:
                common = sorted(set(base) & set(per_seed))
                v = paired_verdict({k: base[k] for k in common}, {k: per_seed[k] for k in common})
                verdict = f"{v['verdict']} ({v['diff_mean']:+.3g} ± {v['diff_half']:.2g})"
            print(f"| {nfe[3:]} | {s} | {fmt(t_interval(list(per_seed.values())))} | {verdict} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"scores": scores, "max": args.max, "ref": ref["path"],
                                               "ref_sha256": ref["sha256"], "meta": meta}, indent=1))


if __name__ == "__main__":
    main()
