"""The report of a `bdense tune` study: its search, what the search cost, and the final check (tune_report.md and
tune.json in the study folder)."""
from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write_text
from ..metrics.stats import paired_verdict, t_interval
from .grid import grid, seed_values
from .report import table
from .tune_plan import TuneConfig


def _gain(results: dict, name: str, metric: str) -> list[str]:
    """Paired (same training seed) difference of `name` to uniform K at the end of training, per NFE."""
    out = []
    for nfe, e in grid(results).items():
        runs = e["runs"]
        if name in runs:
            v = paired_verdict(*[seed_values(runs[s], e["steps_total"], metric) for s in ("uniform", name)])
            out.append(f"NFE {nfe}: {name} - uniform = {v['diff_mean']:+.4g} ± {v['diff_half']:.2g} ({v['verdict']})")
    return out


def _cost_lines(c: dict, cfg: TuneConfig) -> list[str]:
    if "cache_trajectories" in c:  # sfd
        return [f"- teacher passes: {c['teacher_passes']:,} ((cache {c['cache_trajectories']:,} + tuning references "
                f"{cfg.tune_seeds}) trajectories x {c['teacher_nfe']} teacher NFE; the cache also serves the final "
                f"runs)", f"- student training passes: {c['student_train_passes']:,} (iterations x trained intervals "
                f"x batch; = {c['full_runs_equivalent']:.1f} full-budget runs)"]
    return [f"- teacher passes: {c['teacher_passes']:,} (2 DDIM steps per training image, and the "
            f"{cfg.start_steps}-step references of {cfg.tune_seeds} tuning seeds)", f"- student training passes: "
            f"{c['student_train_passes']:,} (iterations x batch; = {c['full_runs_equivalent']:.1f} full-budget runs)"]


def write_tune_report(tuner, doc: dict | None, spec: str, results: dict | None) -> Path:
    cfg, out, words = tuner.cfg, Path(tuner.cfg.out), tuner.host.tune_words(tuner.cfg)
    text = ["# bdense tune report", "", f"Teacher `{cfg.teacher}`, {words['title']}, K = {cfg.branches}, "
            f"objective `{cfg.objective}` (lower is better).", ""]
    if doc is None or "best" not in doc:
        text += [f"No search: the spec `{spec}` was given with --apply (found elsewhere); this checks whether it "
                 "carries to this teacher / data set.", ""]
    else:
        c, n = doc["cost"], doc["trials"]
        text += ["## Search", "", f"Best spec: `{spec}` (trial {doc['best']['trial']}), search value "
                 f"{doc['best']['value']:.4g}" + (f"; uniform (trial {doc['uniform']['trial']}): "
                                                   f"{doc['uniform']['value']:.4g}" if doc["uniform"] else "")
                 + f"; baseline K=1 on the trial budget: rmse {doc['baseline_trial_budget']['rmse']:.4g}, "
                 f"fid {doc['baseline_trial_budget']['fid']:.4g}.",
                 f"Measured on {cfg.tune_seeds} tuning seeds from {tuner.seeds[0]} (seed block {cfg.seed_block}; never used for training or "
                 f"for the evaluation below), {words['trial']}.",
                 *([f"Trials ran on {words['fraction']:.0%} of the final budget: a ranking of "
                    "short runs need not hold at full length (on digits the winner at 1/3 lost to uniform at the "
                    "full budget), so judge by the final check below."] if words["fraction"] < 1 else []),
                 "", "| trial | spec | value | rmse | fid |", "|---|---|---|---|---|",
                 *[f"| {r['trial']} | `{r['spec']}` | {r['value']:.4g} | {r['rmse']:.4g} | {r['fid']:.4g} |"
                   for r in doc["top"]], "", "## Tuning cost", "",
                 f"- trials: {sum(n.values())} ({n['complete']} completed, {n['pruned']} pruned, {n['failed']} failed)",
                 *_cost_lines(c, cfg),
                 f"- student evaluation passes: {c['student_eval_passes']:,}",
                 f"- time: {c['trial_seconds']:.0f} s of trials, {c['search_wall_s']:.0f} s wall for the search",
                 *[f"- note: {x}" for x in doc["notes"]], ""]
    if results is not None:
        text += ["## Final check (full budget, held-out evaluation seeds)", "",
                 "Re-trained by `bdense compare` in `final/` (its [report](final/report.md) has progress plots and "
                 "samples).", "", table(results), "Gain of the tuned weights over uniform K (paired by seed):", "",
                 *[f"- {m}: {x}" for m in ("rmse", "fid") for x in _gain(results, "tuned", m)], ""]
    text += [f"Reproduce or carry over: {words['reproduce'].replace('SPEC', spec)}.", ""]
    atomic_write_text(out / "tune_report.md", "\n".join(text))
    summary = {"spec": spec, "search": doc, "final": None if results is None else {
        nfe: {s: {m: t_interval(list(seed_values(runs, e["steps_total"], m).values()))
                  for m in ("rmse", "fid")} for s, runs in e["runs"].items()} for nfe, e in grid(results).items()}}
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=1, default=str))
    return out / "tune_report.md"
