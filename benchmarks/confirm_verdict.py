"""The confirmation's family-wise verdict (docs/confirmation.md): Holm-Bonferroni over every pre-registered
comparison of several compare folders at once (the per-report Holm of `bdense compare` covers one folder only).

    python benchmarks/confirm_verdict.py --expect 26 'digits A=runs/confirm/sfd-digits-a' 'digits B=...' ...

Reads LABEL=DIR: the union of DIR/results.json and DIR/parts/*.json (a compare folder, or a folder of committed
parts files alone, benchmarks/confirm-results/CELL, when the runs are gone), pairs baseline and
setting on training seeds at the end of training, adjusts all p-values together and prints a markdown table with
the count of comparisons in its caption, then the pre-registered decision. --expect: the count the plan fixed; a
different count (a missing cell, a seed with too few pairs) is printed, never hidden.

While cells are still missing (fewer comparisons than --expect), Holm over the ones present would be too lenient, so
the script prints the interim reading instead: per comparison the range of Holm-adjusted p-values over the whole
family that any p-values of the missing comparisons can give (bdense.metrics.stats.holm_interim), and whether that
settles it (the whole range <= 5%: family-wise significant; > 5%: not) or leaves it open.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bdense.metrics.stats import holm, holm_interim  # noqa: E402
from bdense.metrics.stats import t_interval  # noqa: E402
from bdense.studies.grid import grid, metrics, point_name, seed_values  # noqa: E402
from bdense.studies.report import FAMILY_ALPHA, family  # noqa: E402
from bdense.errors import BdenseError  # noqa: E402
from bdense.studies.union import labeled_unions  # noqa: E402


def verdicts(folders: dict) -> list[dict]:
    """One row per (cell, point, setting, metric) of every folder, with its Holm p over all of them."""
    rows = []
    for label, results in folders.items():
        entries, base = grid(results), results["settings"][0]["name"]
        for (point, setting, metric), v in family(results).items():
            runs = entries[point]["runs"]  # seeds with a run on both sides (a diverged run is there, not a pair)
            rows.append(dict(v, cell=label, point=f"{point_name(results)} {point}", setting=setting,
                             metric=metrics(results)[metric], asked=results["config"].get("seeds"),
                             seeds_in=len(set(runs[base]) & set(runs[setting]))))
    for row, p in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = p
        row["fw"] = ("too few seeds" if p != p else "not distinguishable" if p > FAMILY_ALPHA
                     else "better" if row["diff_mean"] < 0 else "worse")
    return rows


def incomplete(row: dict) -> bool:
    """Fewer seeds run on both sides than the plan asked: a seed shard not in yet. Read nothing from it."""
    return isinstance(row.get("asked"), int) and row.get("seeds_in", row["asked"]) < row["asked"]


def interim(rows: list[dict], expect: int) -> str:
    """Mark each row with what the final Holm over `expect` comparisons will say of it (settled or open) and return
    the interim decision: only a settled 'worse' decides anything before the family is complete. A comparison whose
    seed shards are not all in is 'incomplete' and not counted as in: 2 of 5 seeds must not settle anything."""
    done = [r for r in rows if not incomplete(r)]
    for r in rows:
        if incomplete(r):
            r["settled"], r["holm_range"] = f"incomplete ({r['seeds_in']} of {r['asked']} seeds)", None
    for r, (lo, hi, s) in zip(done, holm_interim([r["p"] for r in done], expect, FAMILY_ALPHA)):
        r["holm_range"] = (lo, hi)
        r["settled"] = {"significant": "better" if r["diff_mean"] < 0 else "worse",
                        "not significant": "not distinguishable", "open": "open", "not judged": "too few seeds"}[s]
    worse = sorted({f"{r['cell']} {r['point']}" for r in rows if r["settled"] == "worse"})
    better = {(r["cell"], r["point"]) for r in rows if r["settled"] == "better"}
    opened = sum(r["settled"] == "open" for r in rows)
    partial = len(rows) - len(done)
    head = f"INTERIM ({len(done)} of {expect} comparisons in" + (
        f"; {partial} more incomplete, their seed shards not all in)" if partial else ")")
    if worse:
        return f"{head}: FAILS in {len(worse)} cell(s): {', '.join(worse)} (family-wise worse whatever the rest shows)"
    points = expect // len({r["metric"] for r in rows}) if rows else 0  # the family's cell-points: / metrics per point
    missing = expect - len(done)
    if points and 2 * len(better) > points:  # the rule's majority is in and final: only a 'worse' can still fail it
        leaning = sum(r["settled"] == "open" and r["diff_mean"] > 0 for r in rows)  # lower is better: may end worse
        return (f"{head}: settled better on a metric in {len(better)} of {points} cell-points (the rule's majority), "
                f"settled worse in none, {opened} comparison(s) open: CONFIRMED unless one of the {missing} missing "
                f"comparisons or the {leaning} open one(s) leaning worse settles worse")
    return (f"{head}: not decided; settled better on a metric in {len(better)} cell-point(s), settled worse in none, "
            f"{opened} comparison(s) open until the family is complete")


def span(rng) -> str:
    """A Holm p range as printed: one number where both ends agree to 3 digits."""
    if rng is None or rng[0] != rng[0]:
        return "-"
    lo, hi = (f"{x:.3g}" for x in rng)
    return lo if lo == hi else f"{lo} - {hi}"


CONVERGED = 0.02  # the plan: the baseline's mean RMSE moves by less than 2% (relative) from 75% to 100% of training


def convergence(folders: dict, at: float = 0.75) -> list[dict]:
    """Per cell and point: the baseline's mean RMSE at the evaluation nearest `at` of training and at the end, the
    relative change and whether it is below CONVERGED (docs/confirmation.md, Convergence)."""
    rows = []
    for label, results in folders.items():
        base = results["settings"][0]["name"]
        for point, entry in grid(results).items():
            runs, end = entry["runs"].get(base, {}), entry["steps_total"]
            steps = sorted({s for r in runs.values() for s in r["evals"] if s < end})
            if not runs or not steps:
                continue
            early = min(steps, key=lambda s: abs(s - at * end))
            a, b = (t_interval(list(seed_values(runs, s, "rmse").values()))["mean"] for s in (early, end))
            change = (b - a) / a if a == a and a else float("nan")
            asked = results["config"].get("seeds")
            rows.append({"cell": label, "point": f"{point_name(results)} {point}", "from": early / end, "rmse_from": a,
                         "rmse_end": b, "change": change, "converged": abs(change) < CONVERGED,
                         "seeds_in": len(runs), "asked": asked if isinstance(asked, int) else len(runs)})
    return rows


def decision(rows: list[dict]) -> str:
    """The plan's rule: no family-wise 'worse' anywhere, and 'better' on a metric in a majority of cells."""
    cells = {(r["cell"], r["point"]) for r in rows}
    better = {(r["cell"], r["point"]) for r in rows if r["fw"] == "better"}
    worse = sorted({f"{c} {p}" for c, p in ((r["cell"], r["point"]) for r in rows if r["fw"] == "worse")})
    if worse:
        return f"FAILS in {len(worse)} cell(s): {', '.join(worse)} (family-wise worse on a metric)"
    if 2 * len(better) > len(cells):
        return f"CONFIRMED: never worse, better on a metric in {len(better)} of {len(cells)} cells"
    return f"NOT CONFIRMED: never worse, but better on a metric in only {len(better)} of {len(cells)} cells"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="LABEL=DIR of one compare output folder")
    ap.add_argument("--expect", type=int, help="the number of comparisons the plan pre-registered")
    a = ap.parse_args(argv)
    try:
        folders = dict(labeled_unions(a.folders))
    except BdenseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = verdicts(folders)
    judged = sum(r["p_holm"] == r["p_holm"] for r in rows)
    complete = len(rows) - sum(map(incomplete, rows))
    if a.expect is not None and complete < a.expect:
        print(f"Interim: {complete} of the {a.expect} pre-registered comparisons are in. Holm over those alone would "
              f"be too lenient; each is read against the whole family instead: its Holm-adjusted p over all "
              f"{a.expect}, lowest and highest over any p-values the missing comparisons get (the extremes: all 0, all "
              f"1); a range <= {FAMILY_ALPHA:.0%} is family-wise better or worse, > {FAMILY_ALPHA:.0%} not "
              f"distinguishable, whatever they show; a range across {FAMILY_ALPHA:.0%} stays open. Per comparison the paired 95% t-interval of setting "
              f"- baseline over training seeds, end of training.\n")
        print(f"| cell | point | setting | metric | setting - baseline | pairs | p | Holm p over {a.expect}, any rest "
              f"| settled |")
        print("|---|---|---|---|---|---|---|---|---|")
        decided = interim(rows, a.expect)
        for r in rows:
            print(f"| {r['cell']} | {r['point']} | {r['setting']} | {r['metric']} | {r['diff_mean']:+.4g} ± "
                  f"{r['diff_half']:.2g} | {r['n']} | {r['p']:.3g} | {span(r['holm_range'])} | {r['settled']} |")
        print(f"\nDecision: {decided}")
    else:
        print(f"Family-wise: Holm-Bonferroni at {FAMILY_ALPHA:.0%} over {judged} comparisons"
              + (f" (the plan fixed {a.expect})" if a.expect is not None else "") + "; per comparison the paired "
              "95% t-interval of setting - baseline over training seeds, end of training.\n")
        print("| cell | point | setting | metric | setting - baseline | pairs | p | Holm p | family-wise |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['cell']} | {r['point']} | {r['setting']} | {r['metric']} | {r['diff_mean']:+.4g} ± "
                  f"{r['diff_half']:.2g} | {r['n']} | {r['p']:.3g} | {r['p_holm']:.3g} | {r['fw']} |")
        print(f"\nDecision: {decision(rows)}")
    print(f"\nConvergence (the plan: the baseline's mean RMSE changes by less than {CONVERGED:.0%} from 75% to 100% "
          f"of training):\n")
    print("| cell | point | baseline RMSE at the evaluation nearest 75% | at 100% | change | converged |")
    print("|---|---|---|---|---|---|")
    for c in convergence(folders):
        print(f"| {c['cell']} | {c['point']} | {c['rmse_from']:.4g} (at {c['from']:.0%}) | {c['rmse_end']:.4g} | "
              f"{c['change']:+.1%} | "
              f"{'yes' if c['converged'] else 'no: not converged at this budget'}"
              + (f" (incomplete: {c['seeds_in']} of {c['asked']} seeds)" if c["seeds_in"] < c["asked"] else "") + " |")
    if a.expect is not None and len(rows) >= a.expect and judged != a.expect:
        print(f"Note: {judged} comparisons were judged, the plan fixed {a.expect}: the missing ones count as not "
              f"confirmed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
