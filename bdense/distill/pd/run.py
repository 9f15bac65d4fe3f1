"""`bdense distill --method pd`: resolve options into a round plan, print it (--dry-run) or train, save the student."""
from __future__ import annotations

from dataclasses import replace

import torch

from ...defaults import fill, left_out_line
from ...errors import BdenseError
from ...models.branches import reparameterize, widen
from ...models.checkpoint import load_model, save_model
from ...train.loop import TrainConfig, Trainer
from ...train.rundir import RunDir
from .plan import PDPlan
from .task import PDTask
from ...io import file_digest
from ..sfd.run import _write_grid, student_meta
from ..weights import parse_weights


def _load_data(spec: str | None, teacher, teacher_path: str):
    from ...data.datasets import load_dataset, teacher_data
    shape = teacher_data(teacher, spec)
    spec = shape["spec"]
    if not spec:
        raise BdenseError(f"{teacher_path} does not name its training data; pass --data (e.g. --data digits)")
    own = spec == teacher.config.get("meta", {}).get("data")
    data = load_dataset(spec, resolution=shape["resolution"] if own else None, pad=shape["pad"])  # as the teacher
    if data.channels != teacher.channels or data.resolution != teacher.resolution:
        raise BdenseError(f"data set {spec} is {data.channels}x{data.resolution}x{data.resolution} but the teacher "
                          f"expects {teacher.channels}x{teacher.resolution}x{teacher.resolution}; pass --data with "
                          f"matching images")
    if teacher.num_classes and data.num_classes != teacher.num_classes:
        raise BdenseError(f"the teacher is conditional on {teacher.num_classes} classes but {spec} has "
                          f"{data.num_classes}; pass --data with the teacher's classes")
    return spec, data


STUDENT_PARAMS = ("auto", "eps", "x", "v")


def check_student_param(choice: str) -> str:
    if choice not in STUDENT_PARAMS:
        raise BdenseError(f"unknown --student-param '{choice}'; use auto, eps, x or v")
    return choice


def student_parameterization(teacher, choice: str = "auto") -> str:
    """The student's parameterization: auto = v for an eps teacher (the reference's students predict v or x; PD
    reports that eps fails at few steps), else the teacher's own."""
    own = teacher.config["vp"]["parameterization"]
    return ("v" if own == "eps" else own) if check_student_param(choice) == "auto" else choice


def pd_student(teacher, k: int, param: str):
    """The K-branch student of `teacher`, its head converted exactly to `param` if the teacher predicts another."""
    student = widen(teacher, k)
    return student if param == teacher.config["vp"]["parameterization"] else reparameterize(student, param)


def _param_text(own: str, param: str) -> str:
    if param == own:
        return f"student: {param}-prediction, as the teacher"
    return (f"student: {param}-prediction, its head converted exactly from the teacher's {own}-prediction at step 0 "
            f"(a fixed sigma-dependent affine map of the network output; the x-prediction, the loss and every "
            f"gradient are the same functions of the weights: docs/pd.md)")


def distill_pd(teacher_path: str, out: str, data: str | None = None, branches: int = 1, branch_weights=None,
               start_steps: int = 64, end_steps: int = 8, round_iters: int | None = None, batch: int | None = None,
               lr: float | None = None, precision: str = "fp32", seed: int = 0, resume: bool = False,
               dry_run: bool = False,
               device: str | None = None, checkpoint_every: int = 100, trust_pickle: bool = False,
               progress: bool = True, log_every: int = 10, grid_seeds: int = 64, last_step_target: str = "x-pred",
               weight_span: str = "round", eval_clip_denoised: bool = True, snapshot_steps: tuple = (),
               student_param: str = "auto", on_snapshot=None, random_flip: bool = False) -> dict:
    """Progressive distillation start_steps -> end_steps (halving each round); K = 1 plain PD, K = 2 B-DENSE.

    The defaults of last_step_target, weight_span and eval_clip_denoised follow google-research's
    diffusion_distillation (docs/pd.md); snapshot_steps: global iterations whose weights `compare` evaluates;
    on_snapshot(step, weights): called after each snapshot (bdense tune measures and prunes so);
    student_param: auto | eps | x | v, the student's parameterization (auto: v for an eps teacher, else the teacher's
    own), converted exactly at step 0 (student_parameterization)."""
    defaults_line = left_out_line("pd", dict(round_iters=round_iters, batch=batch, lr=lr))
    given = fill("pd", dict(round_iters=round_iters, batch=batch, lr=lr))  # None: the studied defaults
    round_iters, batch, lr = given["round_iters"], given["batch"], given["lr"]
    if batch < 1:
        raise BdenseError(f"--batch must be >= 1, got {batch}")
    plan = PDPlan(start_steps=start_steps, end_steps=end_steps, branches=branches, round_iters=round_iters,
                  last_step_target=last_step_target, weight_span=weight_span)
    teacher = load_model(teacher_path, trust_pickle=trust_pickle)
    if teacher.config.get("kind") != "vp":
        raise BdenseError(f"{teacher_path} is an EDM model; progressive distillation needs a VP teacher "
                          f"(train-teacher --parameterization eps|x|v, or a diffusers DDPM): use --method sfd for EDM")
    if teacher.branches != 1:
        raise BdenseError(f"{teacher_path} has {teacher.branches} branches; distil from a single-branch teacher "
                          f"(bdense export it first)")
    plan = replace(plan, sigma_min=teacher.sigma_min, sigma_max=teacher.sigma_max)
    param = student_parameterization(teacher, student_param)
    weights = parse_weights(branch_weights, branches)
    data_spec, images = _load_data(data, teacher, teacher_path)
    vp = teacher.config["vp"]
    steps = plan.total_iters
    options = dict(command="distill", method="pd", teacher=str(teacher_path), teacher_digest=file_digest(teacher_path),
                   data=data_spec, branches=branches, branch_weights=weights.describe(), start_steps=start_steps,
                   end_steps=end_steps, round_iters=round_iters, batch=batch, lr=lr, lr_schedule="linear per round",
                   precision=precision, seed=seed, steps=steps, last_step_target=last_step_target,
                   weight_span=weight_span, eval_clip_denoised=eval_clip_denoised, student_param=param, out=str(out),
                   **({"random_flip": True} if random_flip else {}))  # absent when off: older runs stay reusable
    rc = plan.recipe(clip=eval_clip_denoised)
    w0, w1 = weights.at(*plan.weight_position(0)), weights.at(*plan.weight_position(round_iters - 1))
    plan_text = (f"progressive distillation, K={branches} branch{'es' if branches > 1 else ''}, weights "
                 f"{weights.spec} (at start {w0}, at the end of round 1 {w1}, "
                 f"{'restarting each round' if weight_span == 'round' else 'one schedule over all rounds'}); "
                 f"teacher: VP {vp['parameterization']}-prediction, {vp['time']} time, "
                 f"sigma in [{teacher.sigma_min:.4g}, {teacher.sigma_max:.4g}]\n"
                 f"data {data_spec} ({len(images)} images), batch {batch}, Adam lr {lr} annealed linearly to 0 and "
                 f"reset each round, grad clip 1, no EMA"
                 f"{', random horizontal flips of the data' if random_flip else ''}\n{plan.describe()}\n"
                 f"iterations: {len(plan.rounds)} rounds x {round_iters} = {steps}; per iteration 2 teacher NFE + "
                 f"1 student forward/backward per image\n"
                 f"student samples with DDIM (euler) on t = i/{end_steps}, i = {end_steps}..1 "
                 f"(sigma {rc['sigma_max']:.4g} .. {rc['sigma_min']:.4g}), last step to sigma 0: NFE {end_steps}"
                 f"{', x-prediction clipped to [-1, 1] at every step' if eval_clip_denoised else ''}\n"
                 f"last-step target (t = 1/N): "
                 f"{'the teacher x-prediction at the midpoint' if last_step_target == 'x-pred' else 'the DDIM x~ formula'}"
                 f"\n{_param_text(vp['parameterization'], param)}"
                 + defaults_line)
    if dry_run:
        return {"plan": plan_text, "options": options}
    cfg = TrainConfig(steps=steps, lr=lr, lr_schedule="linear", grad_clip=1.0, ema_decay=0.0, precision=precision,
                      seed=seed, checkpoint_every=checkpoint_every, progress=progress,
                      log_every=min(log_every, round_iters),  # a metrics row in every round (the report's loss plot)
                      device=device, snapshot_steps=tuple(sorted(set(snapshot_steps))), on_snapshot=on_snapshot)
    run = RunDir(out, options, resume=resume)
    run.log(plan_text.replace("\n", "\n    "))
    torch.manual_seed(seed)
    student = pd_student(teacher, branches, param)
    task = PDTask(teacher, student, plan, images, weights, batch, random_flip=random_flip)
    trainer = Trainer(task, run, cfg)
    result = trainer.run(resume=resume)
    if result["completed"] and trainer.acc.is_main_process:
        student.load_state_dict(trainer.final_weights())
        meta = dict(student_meta(teacher, teacher_path, run.path), sampling=rc, data=data_spec,
                    distill={"method": "pd", "branches": branches, "weights": weights.describe(),
                             "rounds": plan.rounds, "start_steps": start_steps, "end_steps": end_steps,
                             "round_iters": round_iters, "batch": batch, "seed": seed,
                             "last_step_target": last_step_target, "weight_span": weight_span,
                             "student_param": param,
                             "targets": ["t - 0.5/N", "t - 1/N"] if branches == 2 else ["t - 1/N"]})
        student.config["meta"] = meta
        save_model(run.path / "model.safetensors", student.eval())
        _write_grid(student, run.path / "samples.png", grid_seeds, trainer.device)
        run.log(f"wrote {run.path / 'model.safetensors'} and samples.png")
    return result
