"""The PD budget criterion of docs/confirmation.md: does the K = 1 student beat the teacher's own DDIM at the same
step count, on FID and on RMSE to the teacher's --start-steps DDIM, at the last two rounds (mean over seeds)?

    python benchmarks/pd_budget.py runs/confirm/pd-search/i500-lr3e-4     # exit 0: met, 1: not met, 2: no results
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bdense.metrics.stats import t_interval  # noqa: E402
from bdense.studies.grid import grid, seed_values  # noqa: E402
from bdense.studies.union import read_results  # noqa: E402

METRICS = ("fid", "rmse")


def budget_rows(results: dict, rounds: int = 2) -> list[dict]:
    """Per metric of the last `rounds` rounds: the baseline's mean over seeds against the teacher's DDIM there."""
    base = results["settings"][0]["name"]
    rows = []
    for steps, entry in list(grid(results).items())[-rounds:]:
        teacher = entry["teacher"][f"teacher DDIM {steps} steps"]
        for m in METRICS:
            ci = t_interval(list(seed_values(entry["runs"][base], entry["steps_total"], m).values()))
            rows.append({"steps": int(steps), "metric": m, "student": ci["mean"], "n": ci["n"], "teacher": teacher[m],
                         "beats": ci["n"] > 0 and ci["mean"] < teacher[m]})
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) / "results.json" if argv else None
    if path is None or not path.exists():
        print("usage: pd_budget.py DIR (a bdense compare --method pd folder with results.json)", file=sys.stderr)
        return 2
    rows = budget_rows(read_results(path))
    for r in rows:
        print(f"{r['steps']} steps {r['metric']}: K=1 {r['student']:.4g} (n={r['n']}) vs teacher DDIM "
              f"{r['teacher']:.4g}: {'beats' if r['beats'] else 'does not beat'}")
    met = all(r["beats"] for r in rows)
    print("criterion met" if met else "criterion not met")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
