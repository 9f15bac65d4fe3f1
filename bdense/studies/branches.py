"""Do the intermediate branches compete with the endpoint? Per interval, the endpoint branch's training loss of a
B-DENSE setting against the baseline's on the same training seed, and how hard the intermediate branches are.

Descriptive (training losses, which the verdicts do not use): the compare report prints it under the branch-loss
plots, and benchmarks/branch_competition.py over several folders. endpoint / baseline above 1: the endpoint fits the
teacher worse than it does alone; inner / endpoint: the intermediate branches' mean loss over the endpoint's.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from ..metrics.stats import t_interval
from ..train.rundir import read_metrics
from .grid import grid, point_name


def read_branch_losses(run_dir: Path, nfe: int | None = None) -> dict:
    """{(interval, branch): ([steps], [loss])} from a run's metrics.jsonl (keys loss/iI/bK); for an SFD-v run, only
    the rows logged at count nfe (their intervals belong to that count's grid)."""
    series: dict = {}
    for row in read_metrics(run_dir):  # a line cut by a killed run is left out (bdense/train/rundir.py)
        if nfe is not None and "nfe" in row and int(row["nfe"]) != nfe:
            continue
        for key, v in row.items():
            if key.startswith("loss/i") and "step" in row:
                i, b = key[len("loss/i"):].split("/b")
                st = series.setdefault((int(i), int(b)), ([], []))
                st[0].append(row["step"])
                st[1].append(v)
    return series


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
        if base not in runs:
            continue
        base_tails = {sd: tail_means(Path(r["dir"]), int(point), tail) for sd, r in runs[base].items()}  # read once
        for s in results["settings"][1:]:
            k = s["branches"]
            if k < 2 or s["name"] not in runs:
                continue
            per_seed = [(base_tails[sd], tail_means(Path(runs[s["name"]][sd]["dir"]), int(point), tail))
                        for sd in sorted(set(runs[base]) & set(runs[s["name"]]))]
            for i in sorted({i for _, d in per_seed for i, _ in d}):
                ratio, inner = [], []
                for b, d in per_seed:
                    inner_losses = [d[(i, j)] for j in range(1, k) if (i, j) in d]
                    if (i, 1) in b and (i, k) in d and inner_losses:
                        ratio.append(d[(i, k)] / b[(i, 1)])
                        inner.append(statistics.fmean(inner_losses) / d[(i, k)])
                if ratio:
                    rows.append({"point": f"{point_name(results)} {point}", "setting": s["name"], "interval": i,
                                 "endpoint_ratio": t_interval(ratio), "inner_ratio": statistics.fmean(inner),
                                 "seeds": len(ratio)})
    return rows


def row_cells(r: dict) -> str:
    """One competition() row as markdown cells: point | setting | interval | endpoint / baseline | inner | seeds."""
    e = r["endpoint_ratio"]
    half = f" ± {e['half']:.3f}" if e["half"] == e["half"] else ""
    return (f"{r['point']} | {r['setting']} | {r['interval']} | {e['mean']:.3f}{half} | {r['inner_ratio']:.2f} | "
            f"{r['seeds']}")


def competition_lines(results: dict, tail: float = 0.2) -> list[str]:
    """The markdown table of competition() (no lines where no run logged branch losses, e.g. runs gone)."""
    rows = competition(results, tail)
    if not rows:
        return []
    out = [f"End of training (mean of each run's last {tail:.0%} of logged losses), paired on training seeds: the "
           "endpoint branch's loss over the baseline's on the same interval (95% t-interval), and the intermediate "
           "branches' mean loss over the endpoint's.", "",
           "| point | setting | interval | endpoint / baseline | inner / endpoint | seeds |", "|---|---|---|---|---|---|"]
    return out + [f"| {row_cells(r)} |" for r in rows] + [""]
