"""Seed statistics and the report's pairing: Holm-Bonferroni against a hand-worked example, verdicts paired on the
training-seed keys (not list position), and seeds that are missing or diverged shown instead of dropped."""
import math

import numpy as np

import pytest

from bdense.metrics.stats import holm, holm_interim, paired_t_p, paired_verdict
from bdense.studies.report import family, table


def test_holm_matches_a_hand_worked_example():
    # p sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone: 0.06)
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [a <= 0.05 for a in adj] == [True, False, False, True]  # Bonferroni (x4) would keep only 0.005 and 0.01
    assert holm([0.3, 0.9]) == pytest.approx([0.6, 0.9]) and holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    out = holm([0.02, float("nan"), 0.04])  # a comparison that could not be made is not in the family (m = 2)
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_paired_p_value_is_the_paired_t_test():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641 on 2 df: two-sided p = 0.074180
    assert paired_t_p([1.0, 2.0, 3.0]) == pytest.approx(0.0741799, rel=1e-5)
    assert paired_t_p([1.0, 1.0]) == 0.0 and paired_t_p([0.0, 0.0]) == 1.0 and math.isnan(paired_t_p([1.0]))


def test_pairs_are_made_on_seed_keys_and_broken_pairs_are_counted():
    base, other = {0: 1.0, 1: 2.0, 2: 3.0}, {2: 2.0, 0: 0.0, 1: 1.0}  # other is 1 lower on every seed, listed shuffled
    v = paired_verdict(base, other)
    assert v["verdict"] == "better" and v["diff_mean"] == -1.0 and v["n"] == 3
    v = paired_verdict(base, {0: 0.0, 1: float("nan"), 2: 2.0, 7: 5.0})  # seed 1 diverged, seed 7 has no partner
    assert v["n"] == 2 and v["seeds"] == [0, 2] and v["diff_mean"] == -1.0


def results(base: dict, other: dict, asked: int = 3) -> dict:
    """A results.json as compare writes it, end of training at step 2, one metric, values keyed by training seed."""
    run = lambda vals: {k: {"dir": f"seed{k}", "evals": {2: {"fid": v}} if v is not None else {1: {"fid": 9.0}}}  # noqa: E731
                        for k, v in vals.items()}
    return {"config": {"seeds": asked, "eval_seeds": 16}, "host": {"metrics": {"fid": "FID"}, "grid_key": "nfe"},
            "settings": [{"name": "baseline", "branches": 1}, {"name": "bdense", "branches": 4}],
            "nfe": {"2": {"teacher": {"teacher euler 2 NFE": {"fid": 10.0}}, "steps_total": 2,
                          "runs": {"baseline": run(base), "bdense": run(other)}}}}


def test_report_pairs_on_seed_keys_whatever_the_order_and_shows_missing_seeds():
    base = {0: 5.0, 1: 7.0, 2: 9.0}
    lower = {2: 8.0, 0: 4.0, 1: 6.0}  # 1 lower on each seed; paired by position it would read (8-5, 4-7, 6-9)
    fam = family(results(base, lower))
    assert fam[("2", "bdense", "fid")]["verdict"] == "better" and fam[("2", "bdense", "fid")]["diff_mean"] == -1.0
    text = table(results(base, lower))
    assert "n=" not in text and "over the 1 comparisons" in text
    text = table(results(base, {0: 4.0, 1: None, 2: 8.0}))  # seed 1 stopped before the end of training
    row = next(line for line in text.splitlines() if line.startswith("| bdense"))
    assert "(n=2 of 3)" in row and "2 pairs" in row
    text = table(results(base, {0: 4.0, 1: float("inf"), 2: 8.0}))  # seed 1 diverged: counted, not hidden
    assert "(n=2 of 3)" in next(line for line in text.splitlines() if line.startswith("| bdense"))


def test_family_wise_verdict_is_stricter_than_each_interval():
    # two cells, each 'better' on its own 95% interval (p about 0.03 and 0.04), but Holm over 2 comparisons makes the
    # smaller p 2 x 0.03 > 0.05: neither survives family-wise; a cell 1 lower on every seed (p = 0) would
    def cell(other):
        return {"teacher": {}, "steps_total": 2, "runs": {
            "baseline": {k: {"dir": "", "evals": {2: {"fid": v}}} for k, v in {0: 5.0, 1: 7.0, 2: 9.0}.items()},
            "bdense": {k: {"dir": "", "evals": {2: {"fid": v}}} for k, v in enumerate(other)}}}
    r = results({}, {})
    r["nfe"] = {"2": cell([4.0, 5.7, 8.3]), "3": cell([4.0, 5.6, 8.3])}
    fam = family(r)
    for v in fam.values():
        assert v["verdict"] == "better" and v["p"] < 0.05 < v["p_holm"] and v["fw"] == "not distinguishable"
    r["nfe"]["4"] = cell([4.0, 6.0, 8.0])
    assert family(r)[("4", "bdense", "fid")]["fw"] == "better"
    assert "over the 3 comparisons" in table(r)


def test_a_baseline_only_report_says_it_has_no_comparison():
    """A K = 1 budget search (one setting) has no family: the caption says so instead of 'over the 0 comparisons'."""
    r = results({}, {})
    r["settings"] = r["settings"][:1]
    r["nfe"] = {"2": {"teacher": {}, "steps_total": 2, "runs": {
        "baseline": {k: {"dir": "", "evals": {2: {"fid": v}}} for k, v in {0: 5.0, 1: 7.0}.items()}}}}
    assert family(r) == {}
    text = table(r)
    assert "it has the baseline only" in text and "over the 0" not in text


def test_holm_interim_brackets_holm_over_every_rest_of_the_family():
    """A comparison settled before the family is complete keeps that verdict whatever p-values the others get, and
    the printed range holds the final Holm p of every completion (Holm is monotone in the p-values)."""
    (lo, hi, v), = holm_interim([0.00692], 26)  # alone: the rest may all sit below it or all above it
    assert (lo, hi, v) == (pytest.approx(0.00692), pytest.approx(26 * 0.00692), "open")
    assert holm_interim([0.0019], 26)[0][2] == "significant" and holm_interim([0.051], 26)[0][2] == "not significant"
    nan = holm_interim([float("nan"), 0.0019], 2)  # a comparison too few seeds to judge counts as still missing
    assert nan[0][2] == "not judged" and nan[1][:2] == (pytest.approx(0.0019), pytest.approx(0.0038))
    # the confirmation's 20 of 26 (2026-12-03): 26 x p left the four between 0.0019 and 0.05 open; with the 14
    # smaller p's known, Holm reaches them with a factor of at most 26 - 6 - 11 = 9 (the 6 missing ahead of them):
    known = [6.99e-05, 0.776, 2.27e-05, 0.000202, 3.3e-05, 0.515, 4.58e-06, 0.00141, 1.64e-05, 0.0717, 0.000559,
             0.000117, 3.5e-05, 0.00834, 0.000438, 0.00692, 0.0323, 0.00884, 0.356, 0.124]
    verdicts = [v for _, _, v in holm_interim(known, 26)]
    assert verdicts[7] == "significant"  # 0.00141: 26 x p = 0.037 and the range agrees
    assert [verdicts[i] for i in (13, 15, 16, 17)] == ["not significant"] * 4  # 0.00834, 0.00692, 0.0323, 0.00884
    assert "open" not in verdicts
    rng = np.random.default_rng(0)
    for _ in range(2000):
        m = int(rng.integers(2, 30))
        known = list(rng.choice([1e-5, 5e-4, 0.0019, 0.004, 0.03, 0.06, 0.5], size=int(rng.integers(1, m + 1))))
        interim = holm_interim(known, m)
        for _ in range(3):
            rest = list(10 ** rng.uniform(-6, 0, size=m - len(known)))  # the comparisons still to come: anything
            for (lo, hi, verdict), a in zip(interim, holm(known + rest)[:len(known)]):
                assert lo - 1e-12 <= a <= hi + 1e-12
                assert verdict != "significant" or a <= 0.05
                assert verdict != "not significant" or a > 0.05
        for p, (_, _, verdict) in zip(known, interim):  # never looser than the bound it replaced (m x p, p)
            if m * p <= 0.05:
                assert verdict == "significant"
            if p > 0.05:
                assert verdict == "not significant"
