"""Seed statistics: mean +- 95% t-interval, and paired differences against the baseline with a verdict."""
from __future__ import annotations

import math

import numpy as np


def t_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and half-width of the two-sided t confidence interval (half-width nan with one value)."""
    from scipy import stats
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "half": float("nan"), "n": 0}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "half": half, "n": n}


def paired_verdict(baseline: list[float], other: list[float], lower_is_better: bool = True) -> dict:
    """Paired by training seed (same trajectories, same order): interval of other - baseline and a plain verdict."""
    d = [b - a for a, b in zip(baseline, other)]
    ci = t_interval(d)
    if ci["n"] < 2 or not math.isfinite(ci["half"]):
        verdict = "too few seeds to judge"
    elif abs(ci["mean"]) <= ci["half"]:
        verdict = f"not distinguishable at {ci['n']} seeds"
    else:
        better = (ci["mean"] < 0) == lower_is_better
        verdict = "better" if better else "worse"
    return {"diff_mean": ci["mean"], "diff_half": ci["half"], "n": ci["n"], "verdict": verdict}


def fmt(ci: dict, digits: int = 4) -> str:
    if ci["n"] == 0 or not math.isfinite(ci["mean"]):
        return "-"
    if not math.isfinite(ci["half"]):
        return f"{ci['mean']:.{digits}g}"
    return f"{ci['mean']:.{digits}g} ± {ci['half']:.2g}"
