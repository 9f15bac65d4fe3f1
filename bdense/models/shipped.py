"""Shipped teachers: `--teacher mnist` finds bdense/teachers/mnist.safetensors (bf16) and its card.

Why: a 28x28 teacher worth distilling takes a GPU (or hours of CPU) to train, so good ones are committed once
and every command can name them. The shipped ones live in the package (`bdense/teachers/`, package data: every
NAME.safetensors + NAME.md dropped there ships in the wheel; no git LFS, each file is a few MB in bf16); the ones
you pack yourself go to your own teachers folder ($BDENSE_TEACHERS, else ~/.local/share/bdense/teachers), never
into the installed package. A name is looked up in your folder first, then among the shipped ones. Each
NAME.safetensors is an ordinary bdense model file whose floating-point weights are stored in bf16 (loading copies
them into the fp32 model, so everything downstream runs in fp32 as before); NAME.md is its model card: the
training command, the quality measured, the bf16 rounding check, and the file's sha256.

    bdense teachers pack runs/teacher-mnist/model.safetensors --name mnist --quality "Inception FID 4.1 ..."
    bdense teachers pack ... --out bdense/teachers    # to commit it to the repository (ships with the package)
    bdense teachers list
    bdense compare --teacher mnist --out runs/compare-mnist
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..data.datasets import data_label
from ..errors import BdenseError

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "teachers"  # bdense/teachers: package data of the wheel


def user_teachers_dir() -> Path:
    """Where `teachers pack` writes unless told: $BDENSE_TEACHERS, else $XDG_DATA_HOME/bdense/teachers."""
    env = os.environ.get("BDENSE_TEACHERS")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data).expanduser() / "bdense" / "teachers"


def teachers_dirs() -> list[Path]:
    """The folders a short name is looked up in, first wins: your own, then the shipped ones."""
    return [user_teachers_dir(), SHIPPED_DIR]


def list_teachers() -> dict[str, Path]:
    """name -> file over every teachers folder (your own shadow shipped ones of the same name)."""
    found = {}
    for d in reversed(teachers_dirs()):
        if d.is_dir():
            found.update({p.stem: p for p in sorted(d.glob("*.safetensors"))})
    return dict(sorted(found.items()))


def shipped_path(spec: str) -> Path | None:
    """The teacher file for a short name (no path separators, no suffix), else None."""
    if not NAME.match(spec) or spec.endswith(".safetensors"):
        return None
    return list_teachers().get(spec)


def resolve(spec):
    """A model path as given if it exists, else the shipped teacher of that short name, else the path unchanged
    (loading then says what is missing). None stays None."""
    if spec is None:
        return None
    path = Path(spec)
    if path.exists():
        return path
    return shipped_path(str(spec)) or path


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # owner/name, e.g. google/ddpm-cifar10-32


def missing_hint(spec) -> str:
    """A sentence for 'model file does not exist' errors: how to get a hub model locally, if the spec looks like a
    hub id (bdense downloads nothing at run time); the shipped names, if it looks like a short name."""
    if HUB_ID.match(str(spec)):
        local = str(spec).split("/")[1]
        return (f"; if '{spec}' is a Hugging Face hub id: bdense reads local folders only, make one with "
                f"`hf download {spec} --local-dir {local}` (huggingface_hub's CLI) and pass --teacher {local} "
                f"(a UNet2DModel with a DDPM/DDIM scheduler: README, Distil your own teacher)")
    if not NAME.match(str(spec)):
        return ""
    names = list_teachers()
    where = " and ".join(str(d) for d in teachers_dirs())
    return (f"; shipped teachers: {', '.join(names)} (in {where})" if names
            else f"; no teacher named '{spec}' is shipped in {where}")


def bf16_state(model) -> dict[str, torch.Tensor]:
    return {k: (v.detach().to("cpu", torch.bfloat16) if v.dtype.is_floating_point else v.detach().cpu()).contiguous()
            for k, v in model.state_dict().items()}


def training_command(options: dict) -> str:
    """The `bdense train-teacher ...` line that options.json of a teacher run describes."""
    skip = {"command", "out", "resume"}
    parts = ["bdense", options.get("command", "train-teacher")]
    for k, v in options.items():
        if k in skip or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {v}")
    return " ".join(parts)


def pack(model_path, name: str, out_dir=None, quality: tuple = (), check_seeds: int = 64,
         command: str | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write OUT_DIR/NAME.safetensors (bf16 weights, the model's own config) and OUT_DIR/NAME.md (the card); an
    existing teacher of that name is replaced only with `overwrite`, the input never."""
    from safetensors.torch import save as st_save

    from ..io import atomic_write_bytes, atomic_write_text, check_outputs, file_digest
    from ..sampling.sample import generate, model_recipe
    from .checkpoint import FORMAT, load_model
    if not NAME.match(name):
        raise BdenseError(f"teacher name '{name}' must be lower-case letters, digits, '.', '_' or '-'")
    src = Path(model_path)
    out_dir = Path(out_dir) if out_dir else user_teachers_dir()
    st_file, card = out_dir / f"{name}.safetensors", out_dir / f"{name}.md"
    check_outputs({"--name": st_file, "--name (its card)": card}, [src], overwrite)
    model = load_model(src)
    if model.branches != 1:
        raise BdenseError(f"{src} has {model.branches} branches; pack a teacher (or an exported student)")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(model.config)
    config["meta"] = dict(config.get("meta", {}), shipped_as=name, stored_dtype="bf16",
                          packed_from_sha256=file_digest(src))
    atomic_write_bytes(st_file, st_save(bf16_state(model), metadata={"format": FORMAT, "config": json.dumps(config)}))
    back = load_model(st_file)
    # what bf16 storage costs: the same seeds sampled with the model's own recipe, fp32 weights vs bf16-stored ones
    recipe = model_recipe(model)
    seeds = list(range(check_seeds))
    a = torch.cat([im for _, im, _ in generate(model, seeds, recipe)])
    b = torch.cat([im for _, im, _ in generate(back, seeds, recipe)])
    rmse = float((a - b).pow(2).mean().sqrt())
    wdiff = max(float((p.float() - q.float()).abs().max() / max(float(p.abs().max()), 1e-12))
                for p, q in zip(model.state_dict().values(), back.state_dict().values()) if p.dtype.is_floating_point)
    opts_file = src.parent / "options.json"
    options = json.loads(opts_file.read_text()) if opts_file.exists() else {}
    cmd = command or (training_command(options) if options else "unknown (no options.json beside the model)")
    meta = model.config.get("meta", {})
    n_params = sum(p.numel() for p in model.parameters())
    lines = [f"# Teacher `{name}`", "",
             f"Use it as `--teacher {name}` in `bdense compare`, `distill`, `trajectories`, `tune`, and as the model "
             f"of `bdense sample {name}`.", "",
             "| | |", "|---|---|",
             f"| data | {data_label(meta.get('data', 'unknown'))} |",
             f"| model | {config.get('kind')} {config.get('preset', '')}, {model.channels}x{model.resolution}x"
             f"{model.resolution}, {n_params / 1e6:.2f}M parameters, {model.num_classes or 'no'} classes |",
             f"| sampling recipe | {recipe.solver}, {recipe.nfe} NFE, {recipe.schedule} |",
             f"| training command | `{cmd}` |",
             f"| trained steps | {meta.get('trained_steps', options.get('steps', 'unknown'))} |",
             f"| stored | bf16 weights (loaded back into fp32), {st_file.stat().st_size / 2**20:.2f} MiB, "
             f"sha256 prefix `{file_digest(st_file)}` |",
             f"| packed from | fp32 file, sha256 prefix `{file_digest(src)}` |",
             f"| bf16 rounding | worst relative weight error {wdiff:.1e}; {check_seeds} samples (seeds 0-"
             f"{check_seeds - 1}, own recipe) differ from the fp32 model's by RMSE {rmse:.2e} (images in [-1, 1]) |",
             "", "## Quality", ""]
    lines += [f"- {q}" for q in quality] or ["- not measured yet"]
    atomic_write_text(card, "\n".join(lines) + "\n")
    return st_file, card
