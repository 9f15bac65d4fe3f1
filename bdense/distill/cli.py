"""`bdense distill` and `bdense trajectories`: one student, and the teacher trajectories SFD learns from (added to
the main app by register(app))."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..defaults import studied
from ..distill.sfd.targets import DEFAULT_TARGETS, DEFAULT_WEIGHTS
from ..errors import BdenseError
from ..options import check, model_spec


# the short forms of distill's teacher-solver options, for the commands that pass them on (trajectories, compare)
TEACHER_ORDER_RULE = typer.Option("sfd", help="dpmpp: sfd | tail | dpm-solver (see distill --help)")
TEACHER_THRESHOLD = typer.Option("auto", help="dpmpp: dynamic | none; auto = dynamic (see distill --help), e.g. none")
TEACHER_HISTORY = typer.Option("auto", help="dpmpp: afs | restart; auto = afs (see distill --help), e.g. restart")


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
    from ..io import check_out_dir
    check_out_dir("--out", out, [teacher])
    if method == "sfd":
        from ..distill.sfd.run import distill_sfd
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
        from ..distill.pd.run import distill_pd
        if branches == 2:  # the only K > 1 PD takes; any other K is refused below, alone
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


def trajectories(
    teacher: Path = typer.Option(..., help="teacher model (or a shipped name: bdense teachers list)", callback=model_spec),
    out: Path = typer.Option(..., help="cache directory"),
    nfe: str = typer.Option("2", help="student NFE the cache serves (fixes the grid); several write OUT/nfeN "
                            "for each (SFD-v), e.g. 2-5"),
    count: int = typer.Option(64000, help="trajectories (noise seeds 0..count-1), per NFE"),
    teacher_solver: str = "dpmpp_3m",
    teacher_order_rule: str = TEACHER_ORDER_RULE,
    teacher_threshold: str = TEACHER_THRESHOLD,
    teacher_history: str = TEACHER_HISTORY,
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

    from ..distill.sfd.cache import write_cache
    from ..distill.sfd.plan import SFDPlan
    from ..io import check_out_dir, file_digest
    from ..models.checkpoint import load_model
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


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
    app.command("trajectories")(trajectories)
