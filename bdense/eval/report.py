"""The comparison report: report.md (tables with intervals and verdicts), PNG plots and side-by-side grids."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..io import atomic_write_text
from .stats import fmt, paired_verdict, t_interval

METRICS = {"fid": "domain FID", "rmse": "RMSE to teacher reference"}


def _series(runs: dict, step: int, metric: str) -> list[float]:
    """One value per training seed, in seed order (pairs baseline and B-DENSE by seed)."""
    return [r["evals"][step][metric] for _, r in sorted(runs.items()) if step in r["evals"]]


def _start(entry: dict, nfe: str, metric: str) -> float:
    """Step 0: every student starts as the teacher, sampled with the student's recipe (Euler + AFS)."""
    return entry["teacher"][f"teacher euler {nfe} NFE"][metric]


def _final_step(entry: dict) -> int:
    return entry["steps_total"]


def table(results: dict) -> str:
    settings = [s["name"] for s in results["settings"]]
    base = settings[0]
    lines = []
    for nfe, entry in results["nfe"].items():
        step = _final_step(entry)
        lines += [f"### NFE {nfe} (end of training, {results['config']['seeds']} training seeds, "
                  f"{len(range(results['config']['eval_seeds']))} evaluation seeds)", "",
                  "| model | " + " | ".join(METRICS.values()) + " | verdict vs baseline |",
                  "|---|" + "---|" * (len(METRICS) + 1)]
        for name, row in entry["teacher"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4g}" if math.isfinite(row[m]) else "0"
                                                      for m in METRICS) + " | |")
        for s in settings:
            cells, verdicts = [], []
            for m in METRICS:
                cells.append(fmt(t_interval(_series(entry["runs"][s], step, m))))
                if s != base:
                    v = paired_verdict(_series(entry["runs"][base], step, m), _series(entry["runs"][s], step, m))
                    verdicts.append(f"{METRICS[m]}: {v['verdict']} ({v['diff_mean']:+.3g} ± {v['diff_half']:.2g})")
            k = next(x["branches"] for x in results["settings"] if x["name"] == s)
            lines.append(f"| {s} (K={k}) | " + " | ".join(cells) + f" | {'; '.join(verdicts) or 'baseline'} |")
        lines.append("")
    return "\n".join(lines)


def progress_table(results: dict, metric: str = "rmse") -> str:
    settings = [s["name"] for s in results["settings"]]
    lines = []
    for nfe, entry in results["nfe"].items():
        steps = sorted({st for r in entry["runs"][settings[0]].values() for st in r["evals"]})
        lines += [f"#### NFE {nfe}: {METRICS[metric]} against training progress", "",
                  "| setting | 0% (= teacher) | " + " | ".join(f"{100 * st / _final_step(entry):.0f}%" for st in steps)
                  + " |", "|---|---|" + "---|" * len(steps)]
        for s in settings:
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
    written = []
    for metric, label in METRICS.items():
        fig, axes = plt.subplots(1, len(results["nfe"]), figsize=(5 * len(results["nfe"]), 3.6), squeeze=False)
        for ax, (nfe, entry) in zip(axes[0], results["nfe"].items()):
            steps = sorted({st for r in entry["runs"][settings[0]].values() for st in r["evals"]})
            x = [0.0] + [st * results["config"]["batch"] / 1000 for st in steps]
            for s in settings:
                cis = [t_interval(_series(entry["runs"][s], st, metric)) for st in steps]
                m = [_start(entry, nfe, metric)] + [c["mean"] for c in cis]
                h = [0.0] + [c["half"] if math.isfinite(c["half"]) else 0 for c in cis]
                ax.plot(x, m, marker="o", label=s)
                ax.fill_between(x, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)], alpha=0.2)
            ax.set_title(f"NFE {nfe}")
            ax.set_xlabel("trajectories seen (thousands)")
            ax.set_ylabel(label)
            ax.legend()
        written.append(_save(fig, out / f"{metric}_vs_progress.png"))
        fig, ax = plt.subplots(figsize=(5, 3.6))
        nfes = [int(n) for n in results["nfe"]]
        for s in settings:
            cis = [t_interval(_series(e["runs"][s], _final_step(e), metric)) for e in results["nfe"].values()]
            ax.errorbar(nfes, [c["mean"] for c in cis], yerr=[c["half"] if math.isfinite(c["half"]) else 0
                                                               for c in cis], marker="o", capsize=3, label=s)
        ax.set_xlabel("NFE")
        ax.set_ylabel(label)
        ax.set_xticks(nfes)
        ax.legend()
        written.append(_save(fig, out / f"{metric}_vs_nfe.png"))
    return written


def read_branch_losses(run_dir: Path) -> dict:
    """{(interval, branch): ([steps], [loss])} from a run's metrics.jsonl (keys loss/iI/bK)."""
    import json
    series: dict = {}
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return series
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for key, v in row.items():
            if key.startswith("loss/i") and "step" in row:
                i, b = key[len("loss/i"):].split("/b")
                st = series.setdefault((int(i), int(b)), ([], []))
                st[0].append(row["step"])
                st[1].append(v)
    return series


def branch_loss_plots(results: dict, out: Path) -> list[str]:
    """Per-branch training loss per interval (training seed 0): which branch competes with the endpoint."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    for nfe, entry in results["nfe"].items():
        dense = [s for s in results["settings"] if s["branches"] > 1 or s is results["settings"][0]]
        losses = {s["name"]: read_branch_losses(entry["runs"][s["name"]][0]["dir"]) for s in dense}
        intervals = sorted({i for ser in losses.values() for i, _ in ser})
        if not intervals:
            continue
        fig, axes = plt.subplots(len(intervals), len(dense), figsize=(4 * len(dense), 3 * len(intervals)),
                                 squeeze=False, sharey="row")
        for r, i in enumerate(intervals):
            for c, s in enumerate(dense):
                ax = axes[r][c]
                for (ii, b), (steps, vals) in sorted(losses[s["name"]].items()):
                    if ii == i:
                        ax.plot(steps, vals, label=f"branch {b}" + (" (endpoint)" if b == s["branches"] else ""))
                ax.set_title(f"{s['name']}, interval {i}", fontsize=9)
                ax.set_yscale("log")
                ax.set_xlabel("iteration")
                if c == 0:
                    ax.set_ylabel("L1 loss (summed over pixels)")
                ax.legend(fontsize=7)
        name = f"branch_losses_nfe{nfe}.png"
        written.append(_save(fig, out / name))
    return written


def grids(cmp, results: dict, out: Path, n: int = 16) -> list[str]:
    """Rows from the same evaluation seeds: teacher reference, then seed-0 student of each setting."""
    from ..data.images import save_labeled_grid
    from ..models.checkpoint import load_model
    from ..sampling.recipe import Recipe
    from ..sampling.sample import generate
    written = []
    seeds = cmp.eval_seeds[:n]
    for nfe, entry in results["nfe"].items():
        rows = [cmp.reference_images(int(nfe))[:n]]
        names = ["teacher ref."] + [f"{s['name']} K={s['branches']}" for s in results["settings"]]
        for s in results["settings"]:
            d = Path(entry["runs"][s["name"]][0]["dir"])
            m = load_model(d / "model.safetensors", device=cmp.device)
            rec = Recipe.from_dict(m.config["meta"]["sampling"])
            rows.append(torch.cat([im for _, im, _ in generate(m, seeds, rec, device=cmp.device)]))
        name = f"samples_nfe{nfe}.png"
        save_labeled_grid(torch.cat(rows), out / name, names, nrow=n)
        written.append(name)
    return written


def write_report(cmp, results: dict) -> Path:
    out = Path(cmp.out)
    pics = plots(results, out)
    loss_pics = branch_loss_plots(results, out)
    grid_files = grids(cmp, results, out)
    p = results["protocol"]
    names = ", ".join(f"{s['name']} (K={s['branches']}, weights {s.get('weights') or 'default'}"
                      + (f", targets {s['targets']}" if s.get("targets") else "")
                      + (f", dropout {s['dropout']}" if s.get("dropout") is not None else "") + ")"
                      for s in results["settings"])
    fresh = results["config"].get("pool") == "fresh"
    pool = ("seed s = its own pool of trajectories, noise seeds from s x budget" if fresh
            else "seed = order of the shared trajectory pool")
    text = [
        "# bdense compare report", "",
        f"Teacher `{results['config']['teacher']}` (digest {results['teacher_digest']}), host SFD, settings: {names}.",
        f"Each setting trained on {results['config']['trajectories']} teacher trajectories (batch "
        f"{results['config']['batch']}, lr {results['config']['lr']}), {results['config']['seeds']} training seeds "
        f"({pool}), evaluated on held-out seeds {p['eval_seeds']}.",
        f"FID: {p['extractor']} features (weights {p['extractor_digest']}) against {p['ref_n']} images of "
        f"`{p['data']}` (stats sha256 {p['ref_sha256']}). Agreement: {p['agreement']}. Weights: {p['weights']}.",
        "Intervals are 95% t-intervals over training seeds; verdicts use the paired difference to the baseline "
        "(same seed = same trajectories in the same order): 'better'/'worse' only when its interval excludes 0."
        + ("" if fresh else " With a shared pool the intervals show optimisation noise only, not the noise of "
           "drawing a new pool (--pool fresh)."),
        "", "## Results", "", table(results), "## Against training progress", "",
        progress_table(results, "rmse"), progress_table(results, "fid"),
        "## Plots", "", *[f"![{x}]({x})" for x in pics], "",
        "## Training loss per branch and interval (training seed 0)", "",
        "Each panel is one student interval of one setting; the endpoint branch is the one sampled. A branch whose "
        "loss stays high while the endpoint's rises against the baseline's is competing with it.", "",
        *[f"![{x}]({x})" for x in loss_pics], "",
        "## Samples (same evaluation seeds)", "",
        "Rows: teacher reference, then " + ", ".join(s["name"] for s in results["settings"]) + " (training seed 0).", "",
        *[f"![{g}]({g})" for g in grid_files], ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(text))
    return path
