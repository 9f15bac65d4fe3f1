"""The comparison report: report.md (tables with intervals and verdicts), PNG plots and side-by-side grids."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..data.datasets import data_label
from ..io import atomic_write_text
from ..metrics.stats import fmt, holm, paired_verdict, t_interval
from .branches import competition_lines, read_branch_losses
from .grid import first_run, grid, metrics, point_name, seed_values

FAMILY_ALPHA = 0.05


def _series(runs: dict, step: int, metric: str) -> list[float]:
    return list(seed_values(runs, step, metric).values())


def _cell(runs: dict, step: int, metric: str, asked: int) -> str:
    """Mean ± interval; with the seed count when fewer seeds than asked made it (missing or diverged)."""
    ci = t_interval(_series(runs, step, metric))
    return fmt(ci) + (f" (n={ci['n']} of {asked})" if ci["n"] < asked else "")


def family(results: dict) -> dict:
    """{(point, setting, metric): paired verdict with its Holm-adjusted p-value 'p_holm' and family-wise verdict
    'fw'} over every comparison with the baseline at the end of training in this report: one family."""
    settings = [s["name"] for s in results["settings"]]
    out = {}
    for point, entry in grid(results).items():
        step = _final_step(entry)
        for s in settings[1:]:
            if s in entry["runs"] and settings[0] in entry["runs"]:
                for m in metrics(results):
                    out[(point, s, m)] = paired_verdict(seed_values(entry["runs"][settings[0]], step, m),
                                                        seed_values(entry["runs"][s], step, m))
    for v, p in zip(out.values(), holm([v["p"] for v in out.values()])):
        v["p_holm"] = p
        v["fw"] = ("too few seeds" if not math.isfinite(p) else "not distinguishable" if p > FAMILY_ALPHA
                   else "better" if v["diff_mean"] < 0 else "worse")
    return out


def family_caption(fam: dict) -> str:
    if not fam:
        return "No comparison with the baseline in this report (it has the baseline only)."
    judged = sum(math.isfinite(v["p_holm"]) for v in fam.values())
    return (f"Family-wise: Holm-Bonferroni at {FAMILY_ALPHA:.0%} over the {judged} comparisons with the baseline in "
            f"this report (cells x metrics x settings, end of training)"
            + (f"; {len(fam) - judged} more had too few paired seeds to judge" if judged < len(fam) else "") + ".")


def family_verdict(results: dict, fam: dict) -> list[str]:
    """One line per setting: the family-wise count, and whether it is never worse and better somewhere."""
    lines = []
    for s in [x["name"] for x in results["settings"][1:]]:
        mine = [v["fw"] for (_, name, _), v in fam.items() if name == s]
        count = {w: mine.count(w) for w in ("better", "worse", "not distinguishable", "too few seeds")}
        holds = count["worse"] == 0 and count["better"] > 0 and count["too few seeds"] == 0
        lines.append(f"- {s}: better in {count['better']}, worse in {count['worse']}, not distinguishable in "
                     f"{count['not distinguishable']}" + (f", not judged in {count['too few seeds']}"
                                                          if count["too few seeds"] else "")
                     + f" of {len(mine)} comparisons; never worse and better in at least one: "
                     + ("yes" if holds else "no"))
    return lines


def _start(entry: dict, nfe: str, metric: str) -> float:
    """Step 0: the teacher row the host names (SFD: the teacher sampled with the student's recipe)."""
    return entry["teacher"][entry.get("start", f"teacher euler {nfe} NFE")][metric]


def _final_step(entry: dict) -> int:
    return entry["steps_total"]


def table(results: dict) -> str:
    settings = [s["name"] for s in results["settings"]]
    mets, unit = metrics(results), point_name(results)
    end = "end of training" if unit == "NFE" else "end of its round"
    asked, fam = results["config"]["seeds"], family(results)
    lines = []
    for nfe, entry in grid(results).items():
        step = _final_step(entry)
        lines += [f"### {unit} {nfe} ({end}, {asked} training seeds, "
                  f"{len(range(results['config']['eval_seeds']))} evaluation seeds)", "",
                  "Per comparison: paired 95% t-interval of setting - baseline. " + family_caption(fam), "",
                  "| model | " + " | ".join(mets.values()) + " | verdict vs baseline | family-wise (Holm) |",
                  "|---|" + "---|" * (len(mets) + 2)]
        for name, row in entry["teacher"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4g}" if math.isfinite(row[m]) else "0"
                                                      for m in mets) + " | | |")
        for s in settings:
            if s not in entry["runs"]:
                continue  # a union report: this setting was not run at this point
            cells = [_cell(entry["runs"][s], step, m, asked) for m in mets]
            verdicts, fws = [], []
            for m in mets:
                v = fam.get((nfe, s, m))
                if v is not None:
                    pairs = f", {v['n']} pairs" if v["n"] < asked else ""
                    verdicts.append(f"{mets[m]}: {v['verdict']} ({v['diff_mean']:+.3g} ± {v['diff_half']:.2g}{pairs})")
                    fws.append(f"{mets[m]}: {v['fw']} (p={v['p_holm']:.2g})")
            k = next(x["branches"] for x in results["settings"] if x["name"] == s)
            lines.append(f"| {s} (K={k}) | " + " | ".join(cells) + f" | {'; '.join(verdicts) or 'baseline'} | "
                         f"{'; '.join(fws)} |")
        lines.append("")
    return "\n".join(lines)


def progress_table(results: dict, metric: str = "rmse") -> str:
    settings = [s["name"] for s in results["settings"]]
    unit = point_name(results)
    zero = "0% (= teacher)" if unit == "NFE" else "teacher, same steps"
    lines = []
    for nfe, entry in grid(results).items():
        steps = sorted({st for r in entry["runs"][settings[0]].values() for st in r["evals"]})
        lines += [f"#### {unit} {nfe}: {metrics(results)[metric]} against training progress", "",
                  f"| setting | {zero} | " + " | ".join(f"{100 * st / _final_step(entry):.0f}%" for st in steps)
                  + " |", "|---|---|" + "---|" * len(steps)]
        for s in (s for s in settings if s in entry["runs"]):
            lines.append(f"| {s} | {_start(entry, nfe, metric):.4g} | "
                         + " | ".join(fmt(t_interval(_series(entry["runs"][s], st, metric))) for st in steps) + " |")
        lines.append("")
    return "\n".join(lines)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = [s["name"] for s in results["settings"]]
    unit = point_name(results)
    xlabel, scale = results.get("host", {}).get("progress_unit", ["trajectories seen (thousands)",
                                                                  results["config"]["batch"] / 1000])
    written = []
    for metric, label in metrics(results).items():
        fig, axes = plt.subplots(1, len(grid(results)), figsize=(5 * len(grid(results)), 3.6), squeeze=False)
        for ax, (nfe, entry) in zip(axes[0], grid(results).items()):
            steps = sorted({st for r in entry["runs"][settings[0]].values() for st in r["evals"]})
            x = [0.0] + [st * scale for st in steps]
            trained = []  # (low, high) of every trained point: the axis is theirs, not step 0's
            for s in (s for s in settings if s in entry["runs"]):
                cis = [t_interval(_series(entry["runs"][s], st, metric)) for st in steps]
                m = [_start(entry, nfe, metric)] + [c["mean"] for c in cis]
                h = [0.0] + [c["half"] if math.isfinite(c["half"]) else 0 for c in cis]
                lo, hi = [max(0.0, a - b) for a, b in zip(m, h)], [a + b for a, b in zip(m, h)]  # metrics are >= 0
                ax.plot(x, m, marker="o", label=s)
                ax.fill_between(x, lo, hi, alpha=0.2)
                trained += list(zip(lo[1:], hi[1:]))
            _fit_to_trained(ax, trained, _start(entry, nfe, metric))
            ax.set_title(f"{unit} {nfe}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            _legend_with_band(ax, "shaded: 95% interval over training seeds")
        written.append(_save(fig, out / f"{metric}_vs_progress.png"))
        fig, ax = plt.subplots(figsize=(5, 3.6))
        nfes = [int(n) for n in grid(results)]
        for s in settings:
            at = [(int(n), e) for n, e in grid(results).items() if s in e["runs"]]
            cis = [t_interval(_series(e["runs"][s], _final_step(e), metric)) for _, e in at]
            half = [c["half"] if math.isfinite(c["half"]) else 0 for c in cis]
            ax.errorbar([n for n, _ in at], [c["mean"] for c in cis],
                        yerr=[[min(h, c["mean"]) for h, c in zip(half, cis)], half],
                        marker="o", capsize=3, label=s)  # a bar stops at 0: the metrics are >= 0
        ax.set_xlabel(unit)
        ax.set_ylabel(label)
        if unit != "NFE":
            ax.set_xscale("log", base=2)
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(n) for n in nfes])
        _legend_with_band(ax, "bars: 95% interval over training seeds")
        written.append(_save(fig, out / f"{metric}_vs_nfe.png"))
    return written


def _fit_to_trained(ax, trained: list, start: float) -> None:
    """Scale the y axis to the trained points when the step-0 point (the teacher with the student's recipe, often
    far worse) would flatten them; say where step 0 went."""
    if not trained:
        return
    lo, hi = min(a for a, _ in trained), max(b for _, b in trained)
    pad = 0.1 * (hi - lo) or 0.05 * abs(hi) or 1.0
    if start > hi + 3 * pad:
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.annotate(f"step 0: {start:.4g} (off the axis)", xy=(0.02, 0.97), xycoords="axes fraction", va="top",
                    fontsize=7)


def _legend_with_band(ax, what: str) -> None:
    """The legend, with one entry that says what the bands or bars are."""
    from matplotlib.patches import Patch
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + [Patch(color="gray", alpha=0.2)], labels + [what], fontsize=7)


def _loss_figure(losses: dict, dense: list, rows: list, title, ylabel: str, path: Path) -> str:
    """One panel per (row, setting): every branch's loss against the iteration; title(name, row) names a panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), len(dense), figsize=(4 * len(dense), 3 * len(rows)), squeeze=False,
                             sharey="row")
    for r, i in enumerate(rows):
        for c, s in enumerate(dense):
            ax = axes[r][c]
            for (ii, b), (steps, vals) in sorted(losses[s["name"]].items()):
                if ii == i:
                    ax.plot(steps, vals, marker="o" if len(steps) < 3 else None,
                            label=f"branch {b}" + (" (endpoint)" if b == s["branches"] else ""))
            ax.set_title(title(s["name"], i), fontsize=9)
            ax.set_yscale("log")
            ax.set_xlabel("iteration")
            if c == 0:
                ax.set_ylabel(ylabel)
            if ax.lines:
                ax.legend(fontsize=7)
    return _save(fig, path)


def branch_loss_plots(results: dict, out: Path) -> list[str]:
    """Per-branch training loss per interval (SFD) or per round (PD; one run serves every round), training seed 0:
    which branch competes with the endpoint."""
    dense = [s for s in results["settings"] if s["branches"] > 1 or s is results["settings"][0]]
    if results.get("host", {}).get("method") == "pd":
        entry = next(iter(grid(results).values()))
        losses = {s["name"]: read_branch_losses(first_run(entry["runs"][s["name"]])["dir"]) for s in dense}
        steps = dict(enumerate([int(n) for n in grid(results)], 1))  # round r trains the steps[r]-step student
        rounds = sorted({i for ser in losses.values() for i, _ in ser})
        if not rounds:
            return []
        return [_loss_figure(losses, dense, rounds, lambda name, r: f"{name}, round {r} ({steps.get(r, '?')} steps)",
                             "PD loss (SNR-truncated MSE)", out / "branch_losses_pd.png")]
    written = []
    for nfe, entry in grid(results).items():
        here = [s for s in dense if s["name"] in entry["runs"]]
        losses = {s["name"]: read_branch_losses(first_run(entry["runs"][s["name"]])["dir"], int(nfe)) for s in here}
        intervals = sorted({i for ser in losses.values() for i, _ in ser})
        if not intervals:
            continue
        written.append(_loss_figure(losses, here, intervals, lambda name, i: f"{name}, interval {i}",
                                    "L1 loss (summed over pixels)", out / f"branch_losses_nfe{nfe}.png"))
    return written


def grids(cmp, results: dict, out: Path, n: int = 16) -> list[str]:
    """Rows from the same evaluation seeds: teacher reference, then the first seed's student of each setting."""
    from ..data.images import save_labeled_grid
    from ..sampling.sample import generate
    written = []
    seeds = cmp.eval_seeds[:n]
    for nfe, entry in grid(results).items():
        rows = [cmp.host.references(int(nfe))["rmse"][:n]]
        here = [s for s in results["settings"] if s["name"] in entry["runs"]]
        names = ["teacher ref."] + [f"{s['name']} K={s['branches']}" for s in here]
        for s in here:
            m, rec = cmp.host.student(Path(first_run(entry["runs"][s["name"]])["dir"]), int(nfe))
            rows.append(torch.cat([im for _, im, _ in generate(m, seeds, rec, device=cmp.device)]))
        name = f"samples_{cmp.host.tag(int(nfe))}.png"
        save_labeled_grid(torch.cat(rows), out / name, names, nrow=n)
        written.append(name)
    return written


def _weights_name(setting: dict, config: dict) -> str:
    """A setting's weight spec as trained: 'default' is spelled out, since the default may change between versions."""
    if setting.get("weights"):
        return setting["weights"]
    if setting["branches"] == 1:
        return "none (endpoint only)"
    from ..distill.sfd.targets import DEFAULT_WEIGHTS
    return f"default ({'uniform' if config.get('method') == 'pd' else DEFAULT_WEIGHTS})"


def write_report(cmp, results: dict) -> Path:
    out = Path(cmp.out)
    pics = plots(results, out)
    loss_pics = branch_loss_plots(results, out)
    grid_files = grids(cmp, results, out)
    p = results["protocol"]
    names = ", ".join(f"{s['name']} (K={s['branches']}, weights {_weights_name(s, results['config'])}"
                      + (f", targets {s['targets']}" if s.get("targets") else "")
                      + (f", dropout {s['dropout']}" if s.get("dropout") is not None else "")
                      + (f", dense intervals {s['dense']}" if s.get("dense") is not None else "")
                      + (f", branch heads {s['heads']}" if s.get("heads") else "") + ")"
                      for s in results["settings"])
    h = results["host"]
    seeds = sorted({int(k) for e in grid(results).values() for runs in e["runs"].values() for k in runs})
    fam = family(results)
    text = [
        "# bdense compare report", "",
        f"Teacher `{results['config']['teacher']}` (digest {results['teacher_digest']}), host {h['host']}, "
        f"settings: {names}.",
        f"Each setting trained on {h['budget']}, {results['config']['seeds']} training seeds ({h['seeds']}), "
        f"evaluated on held-out seeds {p['eval_seeds']} (seed block {p.get('seed_block', 0)}: training seeds "
        f"{', '.join(map(str, seeds))}).",
        f"FID: {p['extractor']} features (weights {p['extractor_digest']}) against {p['ref_n']} images of "
        f"`{data_label(p['data'])}` (stats sha256 {p['ref_sha256']}). Agreement: {p['agreement']}. "
        f"Weights: {p['weights']}.",
        "Intervals are 95% t-intervals over training seeds; verdicts use the paired difference to the baseline "
        f"({h['pairing']}): 'better'/'worse' only when its interval excludes 0." + h["noise_note"],
        "", "## Results", "", table(results), "## Family-wise verdict", "", family_caption(fam), "",
        *family_verdict(results, fam), "", "## Against training progress", "",
        *[progress_table(results, m) for m in metrics(results) if m != "fid"], progress_table(results, "fid"),
        "## Plots", "", *[f"![{x}]({x})" for x in pics], "",
        "## Training loss per branch and " + ("round" if h.get("method") == "pd" else "interval")
        + " (the first training seed)", "",
        "Each panel is one student " + ("round (its step count)" if h.get("method") == "pd" else "interval")
        + " of one setting; the endpoint branch is the one sampled. A branch whose "
        "loss stays high while the endpoint's rises against the baseline's is competing with it.", "",
        *[f"![{x}]({x})" for x in loss_pics], "",
        *([] if h.get("method") == "pd" else competition_lines(results)),
        "## Samples (same evaluation seeds)", "",
        "Rows: teacher reference, then " + ", ".join(s["name"] for s in results["settings"])
        + " (the first training seed).", "",
        *[f"![{g}]({g})" for g in grid_files], ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(text))
    return path
