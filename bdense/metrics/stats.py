"""Seed statistics: mean +- 95% t-interval, paired differences against the baseline with a verdict, and the
Holm-Bonferroni correction that turns many such verdicts into one family-wise verdict."""
from __future__ import annotations

import math

import numpy as np


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def t_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean and half-width of the two-sided t confidence interval (half-width nan with one value), over the finite
    values; n counts them, dropped counts the others (a diverged seed), so a report can say what is missing."""
    from scipy import stats
    v = np.asarray([x for x in values if _finite(x)], dtype=np.float64)
    n, dropped = len(v), len(values) - len(v)
    if n == 0:
        return {"mean": float("nan"), "half": float("nan"), "n": 0, "dropped": dropped}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "half": half, "n": n, "dropped": dropped}


def paired_t_p(diffs: list[float]) -> float:
    """Two-sided p-value of the paired t-test that the mean difference is 0 (nan with fewer than 2 pairs)."""
    from scipy import stats
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    return float(2 * stats.t.sf(abs(d.mean()) / (sd / math.sqrt(len(d))), len(d) - 1))


def paired_verdict(baseline: dict, other: dict, lower_is_better: bool = True) -> dict:
    """Paired on the training-seed keys (same seed = same trajectories, same order): interval of other - baseline,
    its p-value and a plain verdict. A seed missing or non-finite on either side is no pair; n counts the pairs."""
    keys = sorted(k for k in set(baseline) & set(other) if _finite(baseline[k]) and _finite(other[k]))
    d = [other[k] - baseline[k] for k in keys]
    ci = t_interval(d)
    if ci["n"] < 2 or not math.isfinite(ci["half"]):
        verdict = "too few seeds to judge"
    elif abs(ci["mean"]) <= ci["half"]:
        verdict = f"not distinguishable at {ci['n']} seeds"
    else:
        better = (ci["mean"] < 0) == lower_is_better
        verdict = "better" if better else "worse"
    return {"diff_mean": ci["mean"], "diff_half": ci["half"], "n": ci["n"], "verdict": verdict,
            "p": paired_t_p(d), "seeds": keys}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: reject where adjusted <= alpha, and the chance of any
    false rejection in the whole family stays <= alpha. Non-finite p-values (comparisons that could not be made)
    stay nan and are not counted in the family."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if _finite(p))
    m, out, running = len(finite), [float("nan")] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def holm_interim(known: list[float], family: int, alpha: float = 0.05) -> list[tuple[float, float, str]]:
    """What Holm over a family of `family` comparisons will say about each of the `known` p-values before the rest
    exist: per comparison the lowest and highest Holm-adjusted p any p-values of the missing ones can give, and
    'significant' (highest <= alpha), 'not significant' (lowest > alpha), else 'open'; a p that is not finite (too
    few pairs) is 'not judged' and counts as missing.

    Holm is monotone (lowering any p never un-rejects another), so the extremes are the rest all at p = 1 (highest)
    and all at p = 0 (lowest); every other completion lies between. Exact, and tighter than family x p: a known p
    that other known p's push down the ranking is settled sooner."""
    finite = [p for p in known if _finite(p)]
    missing = max(0, family - len(finite))
    high = holm(finite + [1.0] * missing)[:len(finite)]
    low = holm(finite + [0.0] * missing)[:len(finite)]
    out, k = [], 0
    for p in known:
        if not _finite(p):
            out.append((float("nan"), float("nan"), "not judged"))
            continue
        lo, hi = low[k], high[k]
        k += 1
        out.append((lo, hi, "significant" if hi <= alpha else "not significant" if lo > alpha else "open"))
    return out


def fmt(ci: dict, digits: int = 4) -> str:
    if ci["n"] == 0 or not math.isfinite(ci["mean"]):
        return "-"
    if not math.isfinite(ci["half"]):
        return f"{ci['mean']:.{digits}g}"
    return f"{ci['mean']:.{digits}g} ± {ci['half']:.2g}"
