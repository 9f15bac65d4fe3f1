"""Do the intermediate branches compete with the endpoint? Per interval, the endpoint branch's training loss of a
B-DENSE setting against the baseline's (same training seed), and how hard the intermediate branches are.

    python benchmarks/branch_competition.py 'digits A=runs/confirm/sfd-digits-a-nfe2' 'digits B=...' ...

Reads LABEL=DIR, DIR a `bdense compare` output folder whose run directories are still on this machine (the
committed parts alone carry no training losses). For every NFE (SFD) and interval i, over the training seeds with
both runs, the mean of the last --tail of each run's logged losses (loss/iI/bK in metrics.jsonl):
  endpoint / baseline: the setting's endpoint-branch loss over the baseline's loss on the same interval, per seed,
      then the mean and its 95% t-interval; above 1, the endpoint fits the teacher worse than it does alone;
  inner / endpoint: the intermediate branches' mean loss over the endpoint's (how far their targets are to fit).
Descriptive: it reads training losses, which the verdicts do not use; docs/confirmation.md puts it beside them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bdense.errors import BdenseError  # noqa: E402
from bdense.metrics.stats import t_interval  # noqa: E402
from bdense.studies.report import grid, point_name, read_branch_losses  # noqa: E402
from bdense.studies.union import labeled_unions  # noqa: E402


def tail_means(run_dir: Path, nfe: int, tail: float) -> dict:
    """{(interval, branch): mean of the last `tail` fraction of its logged losses} of one run."""
    out = {}
    for key, (_, vals) in read_branch_losses(run_dir, nfe).items():
        if vals:
            n = max(1, round(len(vals) * tail))
            out[key] = statistics.fmean(vals[-n:])
    return out


def competition(results: dict, tail: float = 0.2) -> list[dict]:
    """One row per (point, setting with K > 1, interval): endpoint / baseline and inner / endpoint over seeds."""
    base = results["settings"][0]["name"]
    rows = []
    for point, entry in grid(results).items():
        runs = entry["runs"]
        for s in results["settings"][1:]:
            k = s["branches"]
            if k < 2 or s["name"] not in runs or base not in runs:
                continue
            seeds = sorted(set(runs[base]) & set(runs[s["name"]]))
            per_seed = [(tail_means(Path(runs[base][sd]["dir"]), int(point), tail),
                         tail_means(Path(runs[s["name"]][sd]["dir"]), int(point), tail)) for sd in seeds]
            intervals = sorted({i for _, d in per_seed for i, _ in d})
            for i in intervals:
                ratio, inner = [], []
                for b, d in per_seed:
                    if (i, 1) in b and (i, k) in d:
                        ratio.append(d[(i, k)] / b[(i, 1)])
                        inner.append(statistics.fmean(d[(i, j)] for j in range(1, k) if (i, j) in d) / d[(i, k)])
                if ratio:
                    rows.append({"point": f"{point_name(results)} {point}", "setting": s["name"], "interval": i,
                                 "endpoint_ratio": t_interval(ratio), "inner_ratio": statistics.fmean(inner),
                                 "seeds": len(ratio)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="LABEL=DIR of one compare output folder (run directories present)")
    ap.add_argument("--tail", type=float, default=0.2, help="the fraction of each run's last logged losses averaged")
    a = ap.parse_args(argv)
    if not 0 < a.tail <= 1:
        print(f"error: --tail {a.tail}: give a fraction in (0, 1], e.g. 0.2", file=sys.stderr)
        return 2
    try:
        tables = [(label, competition(results, a.tail)) for label, results in labeled_unions(a.folders)]
    except BdenseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, rows in tables:
        if not rows:
            print(f"error: {label}: no run with logged branch losses on this machine (its run directories are gone?)",
                  file=sys.stderr)
            return 2
    print(f"End-of-training losses (mean of each run's last {a.tail:.0%} of log lines), paired on training seeds.\n")
    print("| cell | point | setting | interval | endpoint / baseline (95% t) | inner / endpoint | seeds |")
    print("|---|---|---|---|---|---|---|")
    for label, rows in tables:
        for r in rows:
            e = r["endpoint_ratio"]
            print(f"| {label} | {r['point']} | {r['setting']} | {r['interval']} | {e['mean']:.3f} ± {e['half']:.3f} | "
                  f"{r['inner_ratio']:.2f} | {r['seeds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
