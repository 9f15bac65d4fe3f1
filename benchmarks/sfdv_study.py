"""SFD-v on digits: one student for NFE 2-5 (K = 1 and K = 4) against per-NFE SFD baselines, several seeds.

Every per-NFE baseline trains on N trajectories at its NFE; each SFD-v student trains on 4N (balanced draw: N at
every NFE, the baseline's own trajectories in the baseline's order), so at each NFE both saw the same
trajectories. Quality is measured as bdense compare measures it (its public helpers, imported, unchanged):
held-out evaluation seeds from compare.EVAL_SEED_BASE, domain FID against the data's reference statistics and
RMSE to the teacher reference (the teacher solver on the refined grid); verdicts are paired 95% t-intervals over
training seeds. Runs, caches and evaluations are reused from --out, so the study can be stopped and continued.

    OMP_NUM_THREADS=1 python benchmarks/sfdv_study.py --teacher runs/demo/teacher/model.safetensors \\
        --features runs/demo/compare/features.safetensors --out runs/sfdv-study
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bdense.studies.compare import CompareConfig, Comparison, Setting  # noqa: E402
from bdense.studies.sfdv import SFDvSetting, evaluate_at_nfes, train_sfdv  # noqa: E402
from bdense.metrics.stats import fmt, paired_verdict, t_interval  # noqa: E402
from bdense.io import atomic_write_text  # noqa: E402
from bdense.models.checkpoint import load_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--features", required=True, help="domain feature network (as bdense compare --features)")
    p.add_argument("--out", required=True)
    p.add_argument("--per-nfe", type=int, default=3200, help="trajectories per NFE (SFD-v: this many per count)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eval-seeds", type=int, default=500)
    p.add_argument("--setting", action="append", default=None,
                   help="SFD-v settings (default v-base:1:2-5 and v-bdense:4:uniform:2-5)")
    a = p.parse_args(argv)
    t0 = time.time()
    vsets = [SFDvSetting.parse(s) for s in (a.setting or ["v-base:1:2-5", "v-bdense:4:uniform:2-5"])]
    nfes = sorted({n for s in vsets for n in s.counts})
    base = Setting("baseline", 1)
    cmp = Comparison(CompareConfig(teacher=a.teacher, out=a.out, nfes=tuple(nfes), settings=(base,), seeds=a.seeds,
                                   trajectories=a.per_nfe, batch=a.batch, lr=a.lr, eval_points=(1.0,),
                                   eval_seeds=a.eval_seeds, features=a.features, device="cpu", progress=False))
    ext, ref_stats = cmp.extractor_and_ref()
    refs = {n: cmp.reference_images(n) for n in nfes}
    caches = {n: cmp.cache(n) for n in nfes}  # OUT/cache/nfeN: the per-NFE pools, shared by SFD-v
    measure = lambda m, r: cmp.measure(m, r, refs[r.nfe], ext, ref_stats)  # noqa: E731
    evals_path = Path(a.out) / "sfdv-evals.json"
    done = json.loads(evals_path.read_text()) if evals_path.exists() else {}
    rows = {}  # (setting, nfe) -> [metrics per seed]
    for seed in range(a.seeds):
        for n in nfes:
            d = cmp.train(n, base, seed)
            key = f"baseline/nfe{n}/seed{seed}"
            if key not in done:
                done[key] = evaluate_at_nfes(load_model(d / "model.safetensors"), [n], measure)[n]
                atomic_write_text(evals_path, json.dumps(done, indent=1))
            rows.setdefault(("baseline", n), []).append(done[key])
        for s in vsets:
            d = train_sfdv(a.teacher, Path(a.out) / "runs" / "sfdv" / s.name / f"seed{seed}", s, a.per_nfe, seed,
                           cache_dir=Path(a.out) / "cache", batch=a.batch, lr=a.lr, device="cpu", progress=False,
                           grid_seeds=16)
            student = load_model(d / "model.safetensors")
            for n in s.counts:
                key = f"{s.name}/nfe{n}/seed{seed}"
                if key not in done:
                    done[key] = evaluate_at_nfes(student, [n], measure)[n]
                    atomic_write_text(evals_path, json.dumps(done, indent=1))
                rows.setdefault((s.name, n), []).append(done[key])
    assert all(caches.values())
    print(table(rows, vsets, nfes, a))
    print(f"\nwall time {time.time() - t0:.0f} s")


def table(rows, vsets, nfes, a) -> str:
    lines = [f"digits, EDM teacher, K-branch SFD; per-NFE baseline: {a.per_nfe} trajectories at its NFE; SFD-v: "
             f"{a.per_nfe} per NFE ({a.per_nfe * len(nfes)} in all), batch {a.batch}, lr {a.lr}, {a.seeds} seeds, "
             f"{a.eval_seeds} held-out evaluation seeds; mean ± 95% half-width; verdicts paired by seed "
             f"(SFD-v - baseline)", "",
             "| NFE | setting | domain FID | RMSE to teacher | FID vs per-NFE baseline | RMSE vs per-NFE baseline |",
             "|---|---|---|---|---|---|"]
    for n in nfes:
        base = rows[("baseline", n)]
        lines.append(f"| {n} | per-NFE baseline (K=1) | {fmt(t_interval([r['fid'] for r in base]))} | "
                     f"{fmt(t_interval([r['rmse'] for r in base]))} | | |")
        for s in vsets:
            if n not in s.counts:
                continue
            mine = rows[(s.name, n)]
            cells = []
            for m in ("fid", "rmse"):
                v = paired_verdict(dict(enumerate(r[m] for r in base)), dict(enumerate(r[m] for r in mine)))
                cells.append(f"{v['diff_mean']:+.4g} ± {v['diff_half']:.2g}: {v['verdict']}")
            lines.append(f"| {n} | {s.name} (SFD-v, K={s.branches}) | {fmt(t_interval([r['fid'] for r in mine]))} | "
                         f"{fmt(t_interval([r['rmse'] for r in mine]))} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
