"""The model card (README.md) of a diffusers export: what the student is, how it was made, how well it does.

Built with huggingface_hub's ModelCard/ModelCardData, so the metadata is what the Hub reads: a license (the
teacher's, when its folder's card states one, else `other`: a student inherits its teacher's and data's terms),
pipeline_tag only where the Hub has one (unconditional-image-generation), and no local absolute paths (a teacher
is named by its file name and digest).
"""
from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..data.datasets import data_label
from ..solvers import nfe as count_nfe
from .denoisers import Denoiser

# options.json keys that are not command-line options (or are spelled differently)
NOT_FLAGS = {"command", "teacher_digest", "steps", "lr_schedule", "sigma_min", "sigma_max"}
FLAG_NAMES = {"trajectory_cache": "trajectories-from"}


PATH_FLAGS = {"teacher", "out", "trajectory_cache", "data"}  # shown by their last parts, never as local paths


def public_name(path) -> str:
    """A path as a card may show it: its last two parts (`teacher-digits/model.safetensors`), never absolute."""
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if parts and Path(str(path)).is_absolute() else str(path)


def teacher_license(teacher) -> str:
    """The license in the card of a teacher folder (a diffusers model with README.md), else 'other'."""
    card = Path(str(teacher or "")) / "README.md"
    if teacher and card.is_file():
        try:
            return ModelCard.load(card).data.license or "other"
        except Exception:  # a card huggingface_hub cannot parse says nothing about the license
            return "other"
    return "other"


def _command(options: dict) -> str:
    """`bdense distill ...` (or train-teacher) as it was run, from the run's options.json (paths by their last
    parts: the card is published, the local folders are not)."""
    parts = ["bdense", options.get("command", "distill")]
    for key in sorted(options):
        val = options[key]
        if key in NOT_FLAGS or val is None:
            continue
        if key in PATH_FLAGS and isinstance(val, str):
            val = public_name(val)
        flag = "--" + FLAG_NAMES.get(key, key.replace("_", "-"))
        if isinstance(val, bool):
            parts.append(flag if val else "--no-" + flag[2:])
            continue
        if isinstance(val, dict):  # branch weights: their spec
            val = val.get("spec")
        parts += [flag, str(val)]
    return " ".join(parts)


def _quality_lines(quality: list) -> list[str]:
    lines = []
    for q in quality:
        if "fid" in q:
            what = (f"{q.get('nfe')} NFE, seeds {q.get('seeds')}" if q.get("source") == "model" else
                    f"samples {q.get('samples')}")
            lines.append(f"- FID {q['fid']:.4f} ({q.get('extractor')} features, {q.get('n')} samples vs "
                         f"{q.get('reference_n')} images of {data_label(q.get('reference_data'))}; {what}) "
                         f"[{q['file']}]"
                         + ("" if q.get("model_digest") else " (from samples: which model made them is not "
                            "recorded)"))
        for name, r in (q.get("results") or {}).items():
            lines.append(f"- teacher agreement '{name}': RMSE {float(r['rmse']):.5f}, PSNR {float(r['psnr']):.2f} dB "
                         f"over {r.get('n')} seeds [{q['file']}]")
    return lines or ["Not measured. Measure it with `bdense fid calc --model MODEL --out fid.json` or `bdense "
                     "agreement --model MODEL --out agreement.json` and export again with `--metrics FILE`."]


def model_card(model: Denoiser, sched: dict, src, quality: list) -> str:
    cfg, meta = model.config, model.config.get("meta", {})
    distill = meta.get("distill") or {}
    weights = (distill.get("weights") or {}).get("spec", "uniform") if distill else "-"
    k_trained = meta.get("branches_before_export", 1)
    nfe = count_nfe(sched["solver"], sched["sigmas"], afs=sched["afs"])
    if cfg["kind"] == "edm":
        param = (f"EDM preconditioning (sigma_data {sched['sigma_data']}, network time "
                 f"{sched['noise_embed_scale']:g} * ln(sigma) / 4)")
    else:
        param = (f"VP {sched['parameterization']}-prediction, {sched['time']} time "
                 f"(x_vp = x / sqrt(1 + sigma^2))")
        if sched.get("converted_from"):
            param += f"; the UNet outputs a {sched['converted_from']}-prediction, mapped exactly by the scheduler"
    params = sum(p.numel() for p in model.net.parameters())
    res, ch, classes = model.resolution, model.channels, model.num_classes
    tag = "class-conditional" if classes else "unconditional"
    afs = ", analytical first step (AFS, no network call)" if sched["afs"] else ""
    how = (f" ({distill['method'].upper()}, {'B-DENSE K=' + str(k_trained) if k_trained > 1 else 'K=1 baseline'})"
           if distill.get("method") else "")
    src_path = Path(str(src))
    opts_file = src_path.parent / "options.json" if src_path.is_file() else None
    commands = []
    if opts_file is not None and opts_file.exists():
        commands.append(_command(json.loads(opts_file.read_text())))
    commands.append(f"bdense export {public_name(src)} --format diffusers --out FOLDER")
    grid = ", ".join(f"{s:.6g}" for s in sched["sigmas"])
    data = ModelCardData(library_name="diffusers", license=teacher_license(meta.get("teacher")),
                         pipeline_tag=None if classes else "unconditional-image-generation",
                         tags=["bdense", "distillation", "few-step", tag])
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# bdense {meta.get('role', 'model')}{how}, {nfe} NFE, {ch}x{res}x{res}", "",
        "| | |", "|---|---|",
        f"| teacher | `{meta.get('teacher_shipped_as') or public_name(meta.get('teacher', '-'))}` (sha256 prefix "
        f"{meta.get('teacher_digest', '-')}) |",
        f"| host method | {distill.get('method', '-')} |",
        f"| branches K | {k_trained} trained (B-DENSE when > 1); this export keeps the endpoint branch only |",
        f"| branch weights | {weights} |",
        f"| sampling | {sched['solver']}, {nfe} NFE{afs} |",
        f"| sigma grid | {grid} |",
        f"| network | diffusers UNet2DModel, {params:,} parameters, {ch}x{res}x{res}, "
        f"{f'{classes} classes' if classes else 'unconditional'} |",
        f"| parameterization | {param} |",
        f"| data | {data_label(meta.get('data') or '-')} |",
        f"| exported from | `{public_name(src)}` (sha256 prefix {meta.get('exported_from_digest', '-')}) |",
        f"| license | `{data.license}`"
        + (": a student inherits the terms of its teacher and of the teacher's training data; set the license "
           "field above before publishing |" if data.license == "other" else " (the teacher's) |"), "",
        "## Use", "", "```python",
        "from diffusers import DiffusionPipeline",
        'pipe = DiffusionPipeline.from_pretrained("path/to/this/folder", trust_remote_code=True)  # runs '
        "bdense_pipeline.py",
        "images = pipe(seeds=list(range(16))).images  # PIL; image i depends only on seed i, as `bdense sample`",
        "```", "",
        "With bdense installed: `from bdense.pipeline import BDensePipeline; BDensePipeline.from_pretrained("
        "FOLDER)` (no code from the folder runs), or `bdense sample FOLDER --seeds 0-15 --grid g.png`.", "",
        "## How it was made", "", "```bash", *commands, "```", "",
        "## Measured quality", "", *_quality_lines(quality), ""]
    return str(ModelCard("\n".join(lines)))
