"""Does compare's FID on data WITHOUT labels rank models as its FID with labels does?

`bdense compare` measures a domain FID with a small network trained on the teacher's data: a classifier when the
data has class labels, the rotation pretext (which of 4 quarter turns) when it has none (a user's own folder of
images). This check takes one labelled data set, hides its labels, trains the rotation network on the same
images, and scores the same models with both networks: every student of a finished compare cell at its own
recipe, and the teacher at several solvers and NFEs (for spread). It prints, per model, both FIDs; the Spearman
rank correlation over all models; and, per NFE, the paired B-DENSE - baseline difference under each network with
its 95% t-interval, so one sees whether a verdict would read the same without labels.

The labelled FIDs are recomputed here from the same seeds and reference images as compare's, and checked against
the values compare recorded in its parts (a check of this script, not of the network).

usage (one thread; ~20 min for a 16x16 cell of 20 students):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/unlabelled_fid_check.py --out runs/unlabelled-fid \\
      runs/confirm/sfd-mnist16-nfe2-seeds0+1 runs/confirm/sfd-mnist16-nfe2-seeds2+3+4 ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from bdense.data.datasets import load_dataset
from bdense.metrics.features import DomainExtractor, to_levels, train_domain_classifier
from bdense.metrics.fid import RunningStats, frechet_distance
from bdense.metrics.stats import paired_verdict
from bdense.models.checkpoint import load_model
from bdense.sampling.sample import generate, model_recipe
from bdense.seeds import parse_seeds

TEACHER_ROWS = [("euler", 2), ("euler", 4), ("euler", 8), ("dpmpp_3m", 3), ("dpmpp_3m", 6), ("heun", 35)]


def stats_of(extractors, batches) -> list[RunningStats]:
    out = [RunningStats() for _ in extractors]
    for x in batches:
        for s, ext in zip(out, extractors):
            s.update(ext(x))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cells", nargs="+", type=Path, help="finished compare folders (their parts/*.json and runs/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rotation-steps", type=int, default=1000, help="as compare's feature net (feature_steps)")
    ap.add_argument("--teacher-seeds", type=int, default=1000)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [json.loads(p.read_text()) for c in args.cells for p in sorted((c / "parts").glob("*.json"))]
    if not parts:
        sys.exit("error: no parts/*.json under the cells given; pass finished compare folders")
    cfg, proto = parts[0]["config"], parts[0]["protocol"]
    labelled = DomainExtractor(cfg["features"] or args.cells[0] / "features.safetensors")  # compare trained it there
    res, pad = labelled.config["resolution"], labelled.config.get("pad", "none")
    data = load_dataset(proto["data"], resolution=res, pad=pad)
    assert len(data) == proto["ref_n"], (len(data), proto["ref_n"])

    npz = args.out / "unlabelled.npz"  # the same images, labels dropped: what a user's folder of images gives
    if not npz.exists():
        np.savez(npz, images=to_levels(data.images).permute(0, 2, 3, 1).numpy().astype(np.uint8))
    rot_path = args.out / "rotation.safetensors"
    if not rot_path.exists():
        r = train_domain_classifier(f"npz:{npz}", rot_path, steps=args.rotation_steps, log=print)
        (args.out / "rotation.json").write_text(json.dumps(r, indent=2) + "\n")
    rotation = DomainExtractor(rot_path)
    extractors = [labelled, rotation]
    ref = stats_of(extractors, data.images.split(1000))
    seeds = parse_seeds(proto["eval_seeds"])

    def fids(batches) -> list[float]:
        """[labelled, rotation] FID of the images in `batches`, each batch seen by both networks once."""
        return [frechet_distance(r.mu, r.sigma, x.mu, x.sigma) for r, x in zip(ref, stats_of(extractors, batches))]

    def sampled(den, recipe, n=None):
        return (im for _, im, _ in generate(den, seeds[:n], recipe, batch_size=250))

    rows_path = args.out / "rows.json"  # the scores so far: a stopped check resumes where it was
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    done = {r["model"] for r in rows}

    def add(row):
        rows.append(row)
        rows_path.write_text(json.dumps(rows, indent=1) + "\n")
        recorded = f" (compare recorded {row['recorded']:.3f})" if "recorded" in row else ""
        print(f"{row['model']}: labelled {row['lab']:.3f}{recorded}, rotation {row['rot']:.3f}", flush=True)

    held = f"{proto['data']}:test"  # the data's own floor at the students' count, where a held-out split exists
    if f"held-out data ({held})" not in done:
        try:
            test = load_dataset(held, resolution=res, pad=pad).images[:len(seeds)]
        except Exception as e:  # noqa: BLE001 - a data set without a test split has no floor row
            print(f"no floor row: {e}")
        else:
            lab, rot = fids(test.split(250))
            add(dict(model=f"held-out data ({held})", nfe=0, setting="data", seed=None, lab=lab, rot=rot))
    teacher = load_model(cfg["teacher"])
    for solver, nfe in TEACHER_ROWS:
        if f"teacher {solver} {nfe} NFE" not in done:
            recipe = model_recipe(teacher).with_overrides(nfe=nfe, solver=solver)
            lab, rot = fids(sampled(teacher, recipe, args.teacher_seeds))
            add(dict(model=f"teacher {solver} {nfe} NFE", nfe=nfe, setting="teacher", seed=None, lab=lab, rot=rot))
    for part in parts:
        for nfe, entry in part["nfe"].items():
            for setting, runs in entry["runs"].items():
                for seed, run in runs.items():
                    path = Path(run["dir"]) / "model.safetensors"
                    if str(path) in done:
                        continue
                    den = load_model(path)
                    lab, rot = fids(sampled(den, model_recipe(den)))
                    final = run["evals"][str(max(int(k) for k in run["evals"]))]
                    add(dict(model=str(path), nfe=int(nfe), setting=setting, seed=int(seed), lab=lab, rot=rot,
                             recorded=final["fid"]))
    checks = [abs(r["lab"] - r["recorded"]) for r in rows if "recorded" in r]

    lines = [f"Data: {proto['data']} at {res}px ({len(data)} reference images), eval seeds {proto['eval_seeds']}; "
             f"labelled network {labelled.path} (accuracy {labelled.config['accuracy']:.3f}), rotation network "
             f"{rot_path} (held-out turn accuracy {rotation.config['accuracy']:.3f}, chance 0.25).",
             f"Largest |labelled FID here - compare's recorded FID| over {len(checks)} students: "
             f"{max(checks):.2e}.", "",
             "| model | NFE | labelled FID | rotation FID |", "|---|---|---|---|"]
    student = [r["setting"] in ("baseline", "bdense") for r in rows]
    nfes = sorted({r["nfe"] for r, st in zip(rows, student) if st})
    label = lambda r: f"student {r['setting']}, seed {r['seed']}" if r["setting"] in ("baseline", "bdense") \
        else r["model"]  # noqa: E731
    lines += [f"| {label(r)} | {r['nfe'] or ''} | {r['lab']:.3f} | {r['rot']:.3f} |" for r in rows]
    lab, rot = np.array([r["lab"] for r in rows]), np.array([r["rot"] for r in rows])
    groups = [("all rows", list(range(len(rows)))),
              ("the teacher rows", [i for i, r in enumerate(rows) if r["setting"] == "teacher"]),
              ("all students", [i for i, st in enumerate(student) if st])]
    groups += [(f"the NFE {n} students", [i for i, (r, st) in enumerate(zip(rows, student)) if st and r["nfe"] == n])
               for n in nfes]
    lines += ["", "Spearman rank correlation of the two FIDs: " + "; ".join(
        f"{what} ({len(ix)}): {spearmanr(lab[ix], rot[ix])[0]:.3f}" for what, ix in groups) + ".", "",
              "| NFE | network | baseline | B-DENSE | B-DENSE - baseline (paired 95% t) | p | pairs |",
              "|---|---|---|---|---|---|---|"]
    for nfe in nfes:
        by = {s: {r["seed"]: r for r in rows if r["nfe"] == nfe and r["setting"] == s} for s in ("baseline", "bdense")}
        for key, what in (("lab", "labelled"), ("rot", "rotation")):
            v = paired_verdict({s: r[key] for s, r in by["baseline"].items()},
                               {s: r[key] for s, r in by["bdense"].items()})
            a, b = ([by[k][s][key] for s in v["seeds"]] for k in ("baseline", "bdense"))
            lines.append(f"| {nfe} | {what} | {np.mean(a):.3f} | {np.mean(b):.3f} | {v['diff_mean']:+.3f} ± "
                         f"{v['diff_half']:.3f} ({v['verdict']}) | {v['p']:.2g} | {v['n']} |")
    text = "\n".join(lines) + "\n"
    (args.out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
