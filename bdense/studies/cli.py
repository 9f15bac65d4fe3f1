"""`bdense compare` and `bdense tune`: B-DENSE against its baseline, and the branch-weight search (added to the
main app by register(app))."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..defaults import studied
from ..distill.cli import TEACHER_HISTORY, TEACHER_ORDER_RULE, TEACHER_THRESHOLD
from ..distill.sfd.targets import DEFAULT_TARGETS
from ..errors import BdenseError
from ..options import check, model_spec


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
    teacher_order_rule: str = TEACHER_ORDER_RULE,
    teacher_threshold: str = TEACHER_THRESHOLD,
    teacher_history: str = TEACHER_HISTORY,
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
    from ..studies.compare import CompareConfig, compare as run, parse_setting
    if report_only:
        from ..studies.union import report_union
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
    dry_run: bool = typer.Option(False, help="check the options and seeds, print the search and the final check's "
                                 "grid and exit"),
):
    """Search branch weights / schedules with Optuna (TPE, median pruning, resumable), then check the winner."""
    v = check("tune", locals())
    from ..studies.tune import tune as run
    from ..studies.tune_plan import TuneConfig, describe_plan
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
    if dry_run:
        typer.echo(describe_plan(cfg))
        return
    r = run(cfg)
    for note in (r["search"] or {}).get("notes", []):
        typer.echo(f"note: {note}")
    typer.echo(f"spec: {r['spec']}\nreport: {out / 'tune_report.md'}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("tune")(tune)
