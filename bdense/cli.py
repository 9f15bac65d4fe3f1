"""The `bdense` command: thin typer commands that parse options and call the library."""
from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Optional

import typer

from .defaults import studied
from .distill.sfd.targets import DEFAULT_TARGETS, DEFAULT_WEIGHTS
from .errors import BdenseError, Interrupted
from .options import check, model_spec

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Few-step diffusion students by distillation (SFD, progressive distillation) with B-DENSE.")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__
        typer.echo(f"bdense {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")):
    """Few-step diffusion students by distillation (SFD, progressive distillation) with B-DENSE."""


@app.command("train-teacher")
def train_teacher(
    data: str = typer.Option("digits", help="digits | mnist | fashion-mnist | folder:PATH | npz:PATH | cifar10:PATH"),
    out: Path = typer.Option(Path("runs/teacher-digits"), help="run directory"),
    parameterization: str = typer.Option("edm", help="edm (EDM preconditioning) or eps | x | v (VP cosine, for PD)"),
    preset: Optional[str] = typer.Option(None, help="tiny | digits | mnist | cifar | ddpm-cifar10 (default: by resolution)"),
    steps: Optional[int] = typer.Option(None, help="training iterations (default: per data set)"),
    batch: Optional[int] = typer.Option(None, help="global batch size"),
    lr: Optional[float] = None,
    ema_decay: float = 0.999,
    class_cond: bool = typer.Option(False, help="train a class-conditional teacher"),
    resolution: Optional[int] = typer.Option(None, help="resize/pad the data to this size"),
    pad: str = typer.Option("none", help="none (resize to --resolution) | pad (black border up to --resolution)"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16"),
    seed: int = 0,
    resume: bool = typer.Option(False, help="continue the run in --out from its latest checkpoint"),
    checkpoint_every: int = 500,
    log_every: int = typer.Option(50, help="write metrics every N iterations"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    compile: bool = typer.Option(False, help="torch.compile the network (GPU: a small UNet's eager step is bound "
                                 "by kernel launches; minutes to start on CPU)"),
):
    """Train a teacher with the EDM (or VP) loss; writes OUT/model.safetensors and a sample grid."""
    check("train-teacher", locals())
    from .data.datasets import spec_path
    from .io import check_out_dir
    check_out_dir("--out", out, [spec_path(data)])
    from .train.teacher import train_teacher as run
    run(data, str(out), parameterization=parameterization, preset=preset, steps=steps, batch=batch, lr=lr,
        ema_decay=ema_decay, class_cond=class_cond, resolution=resolution, precision=precision, seed=seed,
        resume=resume, checkpoint_every=checkpoint_every, device=device, log_every=log_every, pad=pad,
        compile=compile)


@app.command("sample")
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

    from .data.images import save_grid, save_npz, save_npz_adm, save_pngs
    from .models.checkpoint import check_recipe, load_model
    from .io import check_out_dir, check_outputs
    from .sampling.sample import cycle_classes, model_recipe, sample_uint8
    from .seeds import parse_seeds
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


@app.command("distill")
def distill(
    teacher: Path = typer.Option(..., help="teacher model file (bdense), diffusers model directory, or shipped name",
                                 callback=model_spec),
    out: Path = typer.Option(..., help="run directory"),
    method: str = typer.Option("sfd", help="sfd (data-free) | pd (progressive distillation)"),
    branches: int = typer.Option(1, help="K: 1 = the host baseline, >1 = B-DENSE; for pd "
                                           "K = 2 was worse than K = 1 in the confirmation (docs/confirmation.md)"),
    branch_weights: Optional[str] = typer.Option(None, help="uniform | ramp | W1,..,WK | sum1:W1,..,WK | "
                                                 "end:A[:uniform|linear] | decay:linear|cosine:F[:S-E], e.g. ramp, "
                                                 "1,1,1,2, end:0.5 or decay:cosine:0 (default: sfd "
                                                 f"{DEFAULT_WEIGHTS}, pd uniform; docs/branch-options.md)"),
    branch_targets: str = typer.Option(DEFAULT_TARGETS, help="sfd: teacher | anchored | anchored-log | on-policy, "
                                       "e.g. anchored (docs/branch-options.md)"),
    dropout: float = typer.Option(0.0, help="sfd: student UNet dropout while training, e.g. 0.13 as SFD on CIFAR-10"),
    dense_intervals: Optional[int] = typer.Option(None, help="sfd: train the intermediate branches in the first N "
                                                  "trained intervals only, later ones the endpoint alone (default: "
                                                  "all), e.g. 1"),
    branch_heads: str = typer.Option("shared", help="sfd, K > 1: shared (branches differ in the output conv only) | "
                                     "block (branches 1..K-1 each get their own copy of the last stage, dropped at "
                                     "export), e.g. block (docs/branch-options.md)"),
    nfe: str = typer.Option("2", help="sfd: student NFE (1..8), or several for one SFD-v student told the NFE, "
                            "e.g. 2, 2-5 or 2,3,5 (docs/sfdv.md)"),
    nfe_draw: str = typer.Option("balanced", help="sfd with several --nfe: balanced (each count once per "
                                 "len(counts) iterations) | iid (sfd-main), e.g. iid"),
    teacher_solver: str = typer.Option("dpmpp_3m", help="sfd: dpmpp_3m | heun | euler | dpmpp_2m"),
    teacher_order_rule: str = typer.Option("sfd", help="sfd with a dpmpp teacher: sfd (SFD's code: orders 1, 2, then "
                                           "min(3, steps left), on every grid) | tail (bdense 0.1: min(3, i+1, steps "
                                           "left)) | dpm-solver (lowered only below 10 steps), e.g. tail"),
    teacher_threshold: str = typer.Option("auto", help="sfd with a dpmpp teacher: dynamic (SFD's: each x0 estimate "
                                          "clamped at its 99.5% |x0| quantile and rescaled) | none; auto = dynamic "
                                          "for dpmpp, none otherwise, e.g. none"),
    teacher_history: str = typer.Option("auto", help="sfd with a dpmpp teacher: afs (SFD's: the AFS estimate enters "
                                        "the multistep history) | restart; auto = afs for dpmpp, e.g. restart"),
    first_trajectory_seed: int = typer.Option(0, help="sfd: noise seed of the first training trajectory, e.g. 0"),
    teacher_substeps: int = typer.Option(4, help="sfd: teacher steps per student interval (K must divide it)"),
    afs: bool = typer.Option(True, help="sfd: analytical first step"),
    trajectories: Optional[int] = typer.Option(None, help="sfd: teacher trajectories to train on, over all NFE "
                                               f"(default {studied('sfd', 'trajectories')} per NFE, the studied budget; "
                                               "SFD paper: 200000)"),
    trajectory_cache: Optional[str] = typer.Option(None, "--trajectories-from", help="sfd: a cache written by bdense "
                                                   "trajectories (several --nfe: the folder of its nfeN caches)"),
    data: Optional[str] = typer.Option(None, help="pd: data set (default: the teacher's)"),
    start_steps: int = typer.Option(64, help="pd: teacher sampling steps of the first round"),
    end_steps: int = typer.Option(8, help="pd: student steps after the last round"),
    round_iters: Optional[int] = typer.Option(None, help="pd: optimizer steps per halving round (default "
                                              f"{studied('pd', 'round_iters')}, docs/confirmation.md; PD paper: "
                                              "50000)"),
    last_step_target: str = typer.Option("x-pred", help="pd: target of the last step t = 1/N: x-pred (reference) | "
                                         "ddim, e.g. ddim"),
    weight_span: str = typer.Option("round", help="pd: a branch-weight schedule restarts each round | spans all, "
                                    "e.g. all"),
    eval_clip_denoised: bool = typer.Option(True, help="pd: the student samples with x-hat clipped to [-1, 1] at "
                                            "every step (reference)"),
    student_param: str = typer.Option("auto", help="pd: the student predicts auto (v for an eps teacher, else the "
                                      "teacher's) | eps | x | v, converted exactly at step 0, e.g. x"),
    random_flip: bool = typer.Option(False, help="pd: flip training images left-right with probability 1/2, as PD's "
                                     "reference does on CIFAR-10 (for data where a mirror image is in the domain)"),
    batch: Optional[int] = typer.Option(None, help=f"global batch (default: sfd {studied('sfd', 'batch')}, pd "
                                       f"{studied('pd', 'batch')}, the studied ones)"),
    lr: Optional[float] = typer.Option(None, help=f"learning rate (default: sfd {studied('sfd', 'lr'):g}, / 10 at half "
                                       f"way; pd {studied('pd', 'lr'):g} annealed to 0 each round: the studied ones, "
                                       "bdense/defaults.py)"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16"),
    seed: int = 0,
    resume: bool = False,
    dry_run: bool = typer.Option(False, help="print the resolved plan and exit"),
    device: Optional[str] = None,
    checkpoint_every: int = 100,
    log_every: int = typer.Option(10, help="write metrics every N iterations"),
    compile_teacher: bool = typer.Option(False, help="sfd: torch.compile the teacher (GPU; slow to start on CPU)"),
    trust_pickle: bool = False,
):
    """Distil a teacher into a few-step student (K = 1: host baseline; K > 1: B-DENSE)."""
    v = check("distill", locals())
    from .io import check_out_dir
    check_out_dir("--out", out, [teacher])
    if method == "sfd":
        from .distill.sfd.run import distill_sfd
        res = distill_sfd(str(teacher), str(out), nfe=v["nfe"], nfe_draw=nfe_draw,
                          branches=branches,
                          branch_weights=branch_weights, teacher_substeps=teacher_substeps,
                          teacher_solver=teacher_solver, afs=afs, trajectories=trajectories, batch=batch,
                          lr=lr, precision=precision, seed=seed, resume=resume,
                          dry_run=dry_run, device=device, checkpoint_every=checkpoint_every,
                          trajectory_cache=trajectory_cache, trust_pickle=trust_pickle, log_every=log_every,
                          compile_teacher=compile_teacher, branch_targets=branch_targets, dropout=dropout,
                          teacher_order_rule=teacher_order_rule, teacher_threshold=teacher_threshold,
                          teacher_history=teacher_history, first_trajectory_seed=first_trajectory_seed,
                          dense_intervals=dense_intervals, branch_heads=branch_heads)
    elif method == "pd":
        from .distill.pd.run import distill_pd
        if branches > 1:
            typer.echo("note: for progressive distillation K = 2 was family-wise worse than K = 1 on FID at 32-8 "
                       "steps in the pre-registered confirmation (docs/confirmation.md); K = 1 is recommended")
        res = distill_pd(str(teacher), str(out), data=data, branches=branches,
                         branch_weights=branch_weights,
                         start_steps=start_steps, end_steps=end_steps, round_iters=round_iters, batch=batch,
                         lr=lr, precision=precision, seed=seed, resume=resume, dry_run=dry_run,
                         device=device, checkpoint_every=checkpoint_every, trust_pickle=trust_pickle,
                         last_step_target=last_step_target, weight_span=weight_span,
                         eval_clip_denoised=eval_clip_denoised, student_param=student_param, random_flip=random_flip)
    else:
        raise BdenseError(f"unknown --method '{method}'; use sfd or pd")
    if dry_run:
        typer.echo(res["plan"])


@app.command("trajectories")
def trajectories(
    teacher: Path = typer.Option(..., help="teacher model (or a shipped name: bdense teachers list)", callback=model_spec),
    out: Path = typer.Option(..., help="cache directory"),
    nfe: str = typer.Option("2", help="student NFE the cache serves (fixes the grid); several write OUT/nfeN "
                            "for each (SFD-v), e.g. 2-5"),
    count: int = typer.Option(64000, help="trajectories (noise seeds 0..count-1), per NFE"),
    teacher_solver: str = "dpmpp_3m",
    teacher_order_rule: str = typer.Option("sfd", help="dpmpp: sfd | tail | dpm-solver (see distill --help)"),
    teacher_threshold: str = typer.Option("auto", help="dpmpp: dynamic | none; auto = dynamic (see distill --help), "
                                          "e.g. none"),
    teacher_history: str = typer.Option("auto", help="dpmpp: afs | restart; auto = afs (see distill --help), "
                                        "e.g. restart"),
    teacher_substeps: int = 4,
    afs: bool = True,
    first_seed: int = typer.Option(0, help="noise seed of the first trajectory (distill --first-trajectory-seed)"),
    batch: int = typer.Option(128, help="generation batch (use the training batch for bit-identical students)"),
    shard_size: int = 4096,
    dtype: str = typer.Option("fp32", help="fp32 | bf16 (half the disk)"),
    device: Optional[str] = None,
    trust_pickle: bool = False,
):
    """Write teacher trajectories once; distill --trajectories-from DIR trains from them."""
    v = check("trajectories", locals())
    import torch

    from .distill.sfd.cache import write_cache
    from .distill.sfd.plan import SFDPlan
    from .io import check_out_dir, file_digest
    from .models.checkpoint import load_model
    check_out_dir("--out", out, [teacher])
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(teacher, device=dev, trust_pickle=trust_pickle)
    counts = v["nfe"]
    plans = [SFDPlan(nfe=n, substeps=teacher_substeps, afs=afs, teacher_solver=teacher_solver,
                     teacher_order_rule=teacher_order_rule, teacher_threshold=teacher_threshold,
                     teacher_history=teacher_history, sigma_max=min(80.0, model.sigma_max)) for n in counts]
    for plan in plans:  # one cache per NFE: the grids of different NFE do not nest (docs/sfdv.md)
        where = out if len(counts) == 1 else out / f"nfe{plan.nfe}"
        path = write_cache(model, file_digest(teacher), plan, count, where, batch=batch, shard_size=shard_size,
                           dtype=dtype, device=dev, first_seed=first_seed)
        typer.echo(f"wrote {count} trajectories to {path}")


@app.command("compare")
def compare(
    teacher: Optional[Path] = typer.Option(None, help="teacher model (or a shipped name: bdense teachers list); "
                                           "required unless --report-only", callback=model_spec),
    out: Path = typer.Option(..., help="report directory (runs, caches and evaluations are reused from it)"),
    nfe: str = typer.Option("2,3", help="student NFEs, comma-separated"),
    setting: Optional[list[str]] = typer.Option(None, help="NAME:K[:SPEC][:targets=MODE][:dropout=P][:dense=N][:heads=block], SPEC "
                                                "--branch-weights, repeatable, e.g. bdense:4 or "
                                                "ramp:4:ramp:targets=anchored; the first must be K=1 (default: "
                                                "baseline:1 and bdense:4; pd: bdense:2)"),
    seeds: int = typer.Option(3, help="training seeds per setting"),
    pool: str = typer.Option("shared", help="shared (seeds reorder one trajectory pool) | fresh (each seed its own pool)"),
    seed_block: int = typer.Option(0, help="take training trajectories, training and evaluation seeds from this block "
                                   "(0: as always; N: never overlapping another block), e.g. 1"),
    only_seeds: Optional[str] = typer.Option(None, help="train only these of the --seeds training seeds (0-based): a "
                                             "shard of the comparison, merged by --report-only, e.g. 3,4"),
    trajectories: Optional[int] = typer.Option(None, help="teacher trajectories per run (the budget; default "
                                               f"{studied('sfd', 'trajectories')})"),
    batch: Optional[int] = typer.Option(None, help=f"global batch (default: sfd {studied('sfd', 'batch')}, pd "
                                       f"{studied('pd', 'batch')})"),
    lr: Optional[float] = typer.Option(None, help=f"learning rate (default: sfd {studied('sfd', 'lr'):g}, pd "
                                       f"{studied('pd', 'lr'):g}; bdense/defaults.py)"),
    eval_points: str = typer.Option("0.1,0.25,0.5,1.0", help="fractions of training at which to evaluate"),
    eval_seeds: int = typer.Option(1000, help="held-out evaluation seeds"),
    data: Optional[str] = typer.Option(None, help="data set for the FID reference (default: the teacher's)"),
    features: Optional[Path] = typer.Option(None, help="domain feature network (default: trained into OUT)"),
    teacher_solver: str = "dpmpp_3m",
    teacher_order_rule: str = typer.Option("sfd", help="dpmpp: sfd | tail | dpm-solver (see distill --help)"),
    teacher_threshold: str = typer.Option("auto", help="dpmpp: dynamic | none; auto = dynamic (see distill --help), "
                                          "e.g. none"),
    teacher_history: str = typer.Option("auto", help="dpmpp: afs | restart; auto = afs (see distill --help), "
                                        "e.g. restart"),
    method: str = typer.Option("sfd", help="host: sfd | pd (progressive distillation, a row per round), e.g. pd"),
    start_steps: int = typer.Option(64, help="pd: teacher DDIM steps of round 1 (and of the RMSE reference)"),
    end_steps: int = typer.Option(8, help="pd: student steps after the last round"),
    round_iters: Optional[int] = typer.Option(None, help="pd: iterations per halving round (the budget; default "
                                              f"{studied('pd', 'round_iters')}; PD paper: 50000)"),
    last_step_target: str = typer.Option("x-pred", help="pd: x-pred (reference) | ddim, e.g. ddim"),
    weight_span: str = typer.Option("round", help="pd: round (schedules restart each round) | all, e.g. all"),
    eval_clip_denoised: bool = typer.Option(True, help="pd: sample students and teacher references with x-hat "
                                            "clipped to [-1, 1] at every step"),
    student_param: str = typer.Option("auto", help="pd: the student predicts auto (v for an eps teacher, else the "
                                      "teacher's) | eps | x | v, e.g. x"),
    device: Optional[str] = None,
    report_only: bool = typer.Option(False, help="train nothing: one report over every comparison run into --out "
                                     "(the union of their NFEs/rounds and settings)"),
    move_stale: bool = typer.Option(False, help="rename a finished run made with other options to NAME.stale-TIME "
                                    "and train it again, instead of stopping"),
    dry_run: bool = typer.Option(False, help="check the options, print the grid of runs and exit"),
):
    """Baseline vs B-DENSE side by side over several seeds, with intervals, plots and a report."""
    v = check("compare", locals())
    from .studies.compare import CompareConfig, compare as run, parse_setting
    if report_only:
        from .studies.union import report_union
        typer.echo(f"report: {report_union(out, device=device)}")
        return
    if teacher is None:
        raise BdenseError("compare needs --teacher (a model file or a shipped name), or --report-only")
    cfg = CompareConfig(teacher=str(teacher), out=str(out), nfes=v["nfe"],
                        settings=tuple(parse_setting(s) for s in setting or
                                       ["baseline:1", "bdense:2" if method == "pd" else "bdense:4"]),
                        seeds=seeds, trajectories=trajectories,
                        batch=batch, lr=lr, eval_points=v["eval_points"],
                        eval_seeds=eval_seeds, data=data, features=str(features) if features else None,
                        teacher_solver=teacher_solver, teacher_order_rule=teacher_order_rule,
                        teacher_threshold=teacher_threshold, teacher_history=teacher_history, pool=pool,
                        device=device, method=method, start_steps=start_steps, end_steps=end_steps,
                        round_iters=round_iters, last_step_target=last_step_target, weight_span=weight_span,
                        eval_clip_denoised=eval_clip_denoised, student_param=student_param,
                        seed_block=seed_block, only_seeds=v["only_seeds"], move_stale=move_stale)
    if dry_run:
        typer.echo(cfg.describe_grid())
        return
    run(cfg)
    typer.echo(f"report: {out / 'report.md'}")


from .data.cli import register as register_data  # noqa: E402
from .metrics.cli import register as register_metrics  # noqa: E402
from .models.cli import register as register_models  # noqa: E402
register_data(app)
register_models(app)
register_metrics(app)


@app.command("tune")
def tune(
    teacher: Path = typer.Option(..., help="teacher model (or a shipped name: bdense teachers list)", callback=model_spec),
    out: Path = typer.Option(..., help="study directory (OUT/optuna.db: run again to continue the study)"),
    nfe: int = typer.Option(2, help="sfd: student NFE the weights are tuned for"),
    branches: Optional[int] = typer.Option(None, help="K (default 4; pd: 2, the only K it has)"),
    branch_targets: str = typer.Option(DEFAULT_TARGETS, help="target mode of every trial and of the final K > 1 runs"),
    branch_heads: str = typer.Option("shared", help="sfd: shared | block, for every trial and the final K > 1 runs, "
                                     "e.g. block (docs/branch-options.md)"),
    objective: str = typer.Option("rmse", help="rmse | fid | combo:A (A*rmse/rmse_base + (1-A)*fid/fid_base)"),
    trials: int = typer.Option(30, help="total trials wanted in the study (a rerun adds only the missing ones)"),
    trial_trajectories: Optional[int] = typer.Option(None, help="training budget of one trial (default: "
                                                     "--trajectories; short trials misled, docs/weights.md)"),
    trajectories: Optional[int] = typer.Option(None, help="budget of the final runs (and size of the shared cache; "
                                               f"default {studied('sfd', 'trajectories')})"),
    batch: Optional[int] = typer.Option(None, help=f"global batch (default: sfd {studied('sfd', 'batch')}, pd "
                                       f"{studied('pd', 'batch')})"),
    lr: Optional[float] = typer.Option(None, help=f"learning rate (default: sfd {studied('sfd', 'lr'):g}, pd "
                                       f"{studied('pd', 'lr'):g}; bdense/defaults.py)"),
    tune_seeds: int = typer.Option(500, help="tuning seeds (disjoint from training and evaluation seeds)"),
    report_points: str = typer.Option("0.25,0.5,0.75,1.0", help="fractions of a trial at which it may be pruned"),
    jobs: int = typer.Option(1, help="parallel trials, one per CUDA device (1 on CPU or one GPU)"),
    seed: int = typer.Option(0, help="sampler seed"),
    seed_block: int = typer.Option(0, help="take the trials' and final runs' trajectories, training, tuning and "
                                   "evaluation seeds from this block (0: as always), e.g. 1"),
    final: bool = typer.Option(True, "--final/--no-final", help="re-train the winner, uniform and baseline and compare"),
    final_seeds: int = typer.Option(3, help="training seeds of the final comparison"),
    final_nfe: Optional[str] = typer.Option(None, help="NFEs of the final comparison (default: --nfe)"),
    eval_seeds: int = typer.Option(1000, help="held-out evaluation seeds of the final comparison"),
    eval_points: str = "0.25,0.5,1.0",
    apply: Optional[str] = typer.Option(None, help="no search: check this weight spec (found elsewhere) here"),
    data: Optional[str] = typer.Option(None, help="data set for the FID reference (default: the teacher's)"),
    features: Optional[Path] = typer.Option(None, help="domain feature network (default: trained into OUT/final)"),
    teacher_solver: str = "dpmpp_3m",
    method: str = typer.Option("sfd", help="host: sfd | pd (a trial is a PD run over every round), e.g. pd"),
    start_steps: int = typer.Option(64, help="pd: teacher DDIM steps of round 1 (and of the RMSE reference)"),
    end_steps: int = typer.Option(8, help="pd: student steps after the last round (trials are scored there)"),
    round_iters: Optional[int] = typer.Option(None, help="pd: iterations per round of the final runs (default "
                                              f"{studied('pd', 'round_iters')})"),
    trial_round_iters: Optional[int] = typer.Option(None, help="pd: iterations per round of a trial (default: "
                                                    "--round-iters / 4), e.g. 100"),
    last_step_target: str = typer.Option("x-pred", help="pd: x-pred (reference) | ddim, e.g. ddim"),
    weight_span: str = typer.Option("round", help="pd: round (schedules restart each round) | all, e.g. all"),
    eval_clip_denoised: bool = typer.Option(True, help="pd: sample with x-hat clipped to [-1, 1] at every step"),
    student_param: str = typer.Option("auto", help="pd: the student predicts auto (v for an eps teacher, else the "
                                      "teacher's) | eps | x | v, e.g. x"),
    device: Optional[str] = None,
):
    """Search branch weights / schedules with Optuna (TPE, median pruning, resumable), then check the winner."""
    v = check("tune", locals())
    from .studies.tune import TuneConfig, tune as run
    cfg = TuneConfig(teacher=str(teacher), out=str(out), nfe=nfe, branches=branches, objective=objective,
                     trials=trials, trial_trajectories=trial_trajectories, trajectories=trajectories, batch=batch,
                     lr=lr, tune_seeds=tune_seeds, report_points=v["report_points"], jobs=jobs, seed=seed,
                     final=final, final_seeds=final_seeds, eval_seeds=eval_seeds, eval_points=v["eval_points"],
                     final_nfes=v["final_nfe"], apply=apply,
                     data=data, features=str(features) if features else None, teacher_solver=teacher_solver,
                     branch_targets=branch_targets, branch_heads=branch_heads, device=device, method=method,
                     start_steps=start_steps,
                     end_steps=end_steps, round_iters=round_iters, trial_round_iters=trial_round_iters,
                     last_step_target=last_step_target, weight_span=weight_span,
                     eval_clip_denoised=eval_clip_denoised, student_param=student_param, seed_block=seed_block)
    r = run(cfg)
    for note in (r["search"] or {}).get("notes", []):
        typer.echo(f"note: {note}")
    typer.echo(f"spec: {r['spec']}\nreport: {out / 'tune_report.md'}")


_COMMAND = []  # the click command built from `app` once per process (building it is most of a refusal's time)


def command():
    """The click command tree of `bdense`, with every option's help completed by an example (bdense.clihelp)."""
    if not _COMMAND:
        from .clihelp import teach
        root = typer.main.get_command(app)
        teach(root)
        _COMMAND.append(root)
    return _COMMAND[0]


def _on_signal(signum, frame):
    raise Interrupted(signum)  # outside a trainer (which checkpoints first): stop the whole command, exit 130/143


def main() -> None:
    import signal

    from typer._click import exceptions as click  # typer >= 0.2x carries its own click
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, _on_signal) for s in sigs} if _main_thread() else {}
    try:
        code = command().main(prog_name="bdense", standalone_mode=False)
    except Interrupted as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except BdenseError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.NoArgsIsHelpError as e:  # a bare group: its help, as click would show it
        typer.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        sys.exit(2)
    except click.UsageError as e:  # a malformed value or unknown option: one line, like every other refusal
        cmd = e.ctx.command_path if e.ctx else "bdense"
        typer.echo(f"error: {e.format_message()} (see {cmd} --help)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted by SIGINT", err=True)
        sys.exit(130)
    except OSError as e:  # the file system refused (name too long, permission, ...): the user's path, one line
        where = f" ({e.filename})" if e.filename else ""
        fix = ("free space or choose another output path" if e.errno == errno.ENOSPC
               else "check the path and its permissions")
        typer.echo(f"error: {e.strerror or e}{where}; {fix}", err=True)
        sys.exit(2)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    sys.exit(code if isinstance(code, int) else 0)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    main()
