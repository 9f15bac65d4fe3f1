"""`bdense sample`: images from any model with its recipe (added to the main app by register(app))."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import BdenseError
from ..options import check, model_spec


def sample(
    model: Path = typer.Argument(..., help="a bdense model file, run directory, bdense diffusers export or diffusers "
                                 "model directory, e.g. runs/sfd-k4/model.safetensors, or a shipped teacher's name",
                                 callback=model_spec),
    seeds: str = typer.Option("0-63", help="N-M ranges and numbers, e.g. 0-9999 or 0,5,7-9; image i depends only "
                              "on seed i"),
    solver: Optional[str] = typer.Option(None, help="euler | heun | dpmpp_2m | dpmpp_3m, e.g. heun (default: the "
                                         "model's recipe)"),
    nfe: Optional[int] = typer.Option(None, help="network evaluations, e.g. 4 (default: the model's recipe)"),
    schedule: Optional[str] = typer.Option(None, help="polynomial | logsnr | time-uniform, e.g. logsnr"),
    afs: Optional[bool] = typer.Option(None, help="analytical first step (default: the model's recipe)"),
    order_rule: Optional[str] = typer.Option(None, help="dpmpp: sfd | tail | dpm-solver, how the order falls on the "
                                             "last steps (default: the recipe's, dpm-solver), e.g. sfd"),
    threshold: Optional[str] = typer.Option(None, help="dpmpp: dynamic (SFD's thresholding of every x0 estimate) | "
                                            "none (default: the recipe's, none), e.g. dynamic"),
    afs_history: Optional[bool] = typer.Option(None, help="dpmpp with AFS: the AFS estimate enters the multistep "
                                               "history as in SFD's sampler (default: the recipe's, off)"),
    classes: Optional[str] = typer.Option(None, "--class", help="class-conditional models: one class or a list "
                                          "repeated over the seeds, e.g. 3 or 0-9 (default: drawn per seed)"),
    grid: Optional[Path] = typer.Option(None, help="write a PNG grid of the first 256, e.g. samples.png"),
    npz: Optional[Path] = typer.Option(None, help="write uint8 NHWC images, seeds, labels, e.g. samples.npz"),
    npz_adm: Optional[Path] = typer.Option(None, help="write ADM's layout (arr_0 uint8 NHWC RGB, arr_1 labels) "
                                           "for guided-diffusion's evaluator, e.g. adm.npz"),
    outdir: Optional[Path] = typer.Option(None, help="write one PNG per seed (000042.png), the folder EDM's "
                                          "fid.py and torch-fidelity read, e.g. samples/"),
    batch: int = typer.Option(256, help="batch size (does not change the images), e.g. 64"),
    device: Optional[str] = None,
    trust_pickle: bool = typer.Option(False, help="allow pickled weights in a diffusers directory"),
    overwrite: bool = typer.Option(False, help="replace an existing --npz/--grid/--npz-adm file or --outdir folder"),
):
    """Sample images from any model, by seed, with its own recipe unless overridden."""
    seed_list = check("sample", locals())["seeds"]
    import numpy as np
    import torch

    from ..data.images import save_grid, save_npz, save_npz_adm, save_pngs
    from ..models.checkpoint import check_recipe, load_model
    from ..io import check_out_dir, check_outputs
    from ..sampling.recipe import off_grid_note
    from ..sampling.sample import cycle_classes, model_recipe, sample_uint8
    from ..seeds import parse_seeds
    if grid is None and npz is None and npz_adm is None and outdir is None:
        raise BdenseError("nothing to write: pass --grid PATH.png, --npz PATH.npz, --npz-adm PATH.npz or --outdir DIR")
    check_outputs({"--npz": npz, "--grid": grid, "--npz-adm": npz_adm}, [model], overwrite)
    if outdir is not None:
        check_out_dir("--outdir", outdir, [model], new=True, overwrite=overwrite)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    den = load_model(model, device=dev, trust_pickle=trust_pickle)
    check_recipe(den.config, nfe, model)
    recipe = model_recipe(den).with_overrides(solver=solver, nfe=nfe, schedule=schedule, afs=afs,
                                              order_rule=order_rule, threshold=threshold, afs_history=afs_history)
    recipe.check("fix --solver, --order-rule, --threshold or --afs-history")
    class_list = cycle_classes(parse_seeds(classes, flag="--class") if classes is not None else None, len(seed_list),
                               den.num_classes)
    arr, labels, is_main = sample_uint8(den, seed_list, recipe, batch_size=batch, device=dev, progress=True,
                                        classes=class_list)
    if not is_main:
        return
    if npz is not None:
        extra = {"labels": labels} if labels is not None else {}
        save_npz(arr, npz, seeds=np.array(seed_list), **extra)
        typer.echo(f"wrote {len(arr)} images to {npz}")
    if npz_adm is not None:
        save_npz_adm(arr, npz_adm, labels)
        typer.echo(f"wrote {len(arr)} images to {npz_adm} (ADM layout: arr_0"
                   f"{', arr_1 labels' if labels is not None else '; unconditional model, no labels'})")
    if outdir is not None:
        save_pngs(arr, seed_list, outdir)
        typer.echo(f"wrote {len(arr)} PNGs to {outdir}")
    if grid is not None:
        save_grid(arr[:256], grid)
        typer.echo(f"wrote grid {grid}")
    typer.echo(f"recipe: {recipe.solver} NFE {recipe.nfe} {recipe.schedule} afs={recipe.afs}"
               + "".join(f" {k}={v}" for k, v in recipe.multistep_options().items() if recipe.solver.startswith("dpmpp")))
    note = off_grid_note(den.config, recipe, getattr(den, "nfe_counts", ()))  # after the work: an error stays alone
    if note:
        typer.echo(note, err=True)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
