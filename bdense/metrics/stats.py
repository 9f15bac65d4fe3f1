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


def holm_settled(p: float, family: int, alpha: float = 0.05) -> str:
    """What Holm over a family of `family` comparisons will say about one with p-value p, before the others exist.

    Holm's adjusted p of any comparison is at most family x p (each term (m - j + 1) p_(j) of its running maximum
    has m - j + 1 <= m and p_(j) <= p) and at least p (its own term, with a factor >= 1). So family x p <= alpha is
    'significant' and p > alpha 'not significant' whatever the rest of the family shows; anything between is
    'open' until the whole family is in. A p that is not finite (too few pairs) is 'not judged'."""
    if not _finite(p):
        return "not judged"
    if family * p <= alpha:
        return "significant"
    return "not significant" if p > alpha else "open"


def fmt(ci: dict, digits: int = 4) -> str:
    if ci["n"] == 0 or not math.isfinite(ci["mean"]):
        return "-"
    if not math.isfinite(ci["half"]):
        return f"{ci['mean']:.{digits}g}"
    return f"{ci['mean']:.{digits}g} ± {ci['half']:.2g}"
