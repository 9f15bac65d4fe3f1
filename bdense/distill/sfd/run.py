"""`bdense distill`: resolve options into a plan, print it (--dry-run) or train, then save a self-describing student."""
from __future__ import annotations


import torch

from ...defaults import fill, left_out_line, studied
from ...errors import BdenseError
from ...io import file_digest
from ...models.branches import widen
from ...models.checkpoint import load_model, save_model
from ...models.denoisers import check_heads
from ...train.loop import TrainConfig, Trainer
from ...train.rundir import RunDir
from .plan import SFDPlan, teacher_fields
from .task import SFDTask
from .targets import DEFAULT_TARGETS, DEFAULT_WEIGHTS, check_mode, closing_factors
from ..weights import parse_weights




def sfd_student_recipe(plan: SFDPlan) -> dict:
    """Students sample with Euler on their own grid (AFS first), ending at sigma_min as SFD does."""
    return dict(solver="euler", nfe=plan.nfe, schedule="polynomial", sigma_min=plan.sigma_min,
                sigma_max=plan.sigma_max, rho=plan.rho, afs=plan.afs, final_zero=False)


def distill_sfd(teacher_path: str, out: str, nfe=2, branches: int = 1, branch_weights=None,
                teacher_substeps: int = 4, teacher_solver: str = "dpmpp_3m", afs: bool = True,
                sigma_min: float = 0.006, sigma_max: float = 80.0, trajectories: int | None = None,
                batch: int | None = None, lr: float | None = None, lr_schedule: str = "step-half",
                precision: str = "fp32", seed: int = 0,
                resume: bool = False, dry_run: bool = False, device: str | None = None, progress: bool = True,
                checkpoint_every: int = 100, log_every: int = 10, trajectory_cache: str | None = None,
                trust_pickle: bool = False, grid_seeds: int = 64, snapshot_fractions: tuple = (), on_snapshot=None,
                compile_teacher: bool = False, branch_targets: str = DEFAULT_TARGETS, dropout: float = 0.0,
                teacher_order_rule: str = "sfd", teacher_threshold: str = "auto", teacher_history: str = "auto",
                first_trajectory_seed: int = 0, compile_student: bool = False,
                compile_mode: str | None = None, teacher_batch: int = 0, fast_path: str = "auto",
                nfe_draw: str = "balanced", dense_intervals: int | None = None, branch_heads: str = "shared") -> dict:
    """nfe: one NFE (SFD), or several ('2-5', '2,3,5', a tuple): one SFD-v student for all of them, conditioned
    on the count; --trajectories (default: the studied budget per count, bdense/defaults.py) are shared out over
    the counts (bdense/distill/sfd/sfdv.py). lr and batch left None take the studied defaults too."""
    from .counts import nfe_schedule, parse_counts
    from .sfdv import plans_for
    counts = parse_counts(nfe)
    multi = len(counts) > 1
    nfe = counts[-1]  # the count a multi-NFE student's recipe samples at by default (its best)
    defaults_line = left_out_line("sfd", dict(batch=batch, lr=lr, trajectories=trajectories))
    trajectories = studied("sfd", "trajectories") * len(counts) if trajectories is None else trajectories
    given = fill("sfd", dict(batch=batch, lr=lr))  # None: the studied defaults
    batch, lr = given["batch"], given["lr"]
    if trajectories < batch:
        raise BdenseError(f"--trajectories {trajectories} is smaller than one batch ({batch})")
    if teacher_batch and teacher_batch % batch:
        raise BdenseError(f"--teacher-batch {teacher_batch} must be a multiple of --batch {batch}")
    weights = parse_weights(branch_weights or (DEFAULT_WEIGHTS if branches > 1 else None), branches)
    check_mode(branch_targets)
    if not 0 <= dropout < 1:
        raise BdenseError(f"--dropout must be in [0, 1), got {dropout}")
    if dense_intervals is not None and dense_intervals < 0:
        raise BdenseError(f"--dense-intervals must be >= 0, got {dense_intervals}")
    check_heads(branch_heads)
    if branches == 1:
        dense_intervals = None  # K = 1 has no intermediate branch: plain SFD, recorded as such
        branch_heads = "shared"
    if branch_heads == "block" and compile_student:
        raise BdenseError("--compile-student compiles the network alone, not the heads of --branch-heads block; "
                          "drop --compile-student")
    if first_trajectory_seed < 0:
        raise BdenseError(f"--first-trajectory-seed must be >= 0, got {first_trajectory_seed}")
    steps = trajectories // batch
    teacher = load_model(teacher_path, trust_pickle=trust_pickle)
    if teacher.branches != 1:
        raise BdenseError(f"{teacher_path} has {teacher.branches} branches; distil from a single-branch teacher "
                          f"(bdense export it first)")
    sigma_max = min(sigma_max, teacher.sigma_max)
    plans = plans_for(counts, branches=branches, substeps=teacher_substeps, afs=afs, sigma_min=sigma_min,
                      sigma_max=sigma_max, teacher_solver=teacher_solver, teacher_order_rule=teacher_order_rule,
                      teacher_threshold=teacher_threshold, teacher_history=teacher_history)
    plan = plans[nfe]
    schedule = nfe_schedule(counts, seed, steps, nfe_draw) if multi else None
    if multi and (teacher_batch or compile_student):
        raise BdenseError("--nfe with several counts trains without --teacher-batch and --compile-student; drop them")
    options = dict(command="distill", method="sfd", teacher=str(teacher_path), teacher_digest=file_digest(teacher_path),
                   nfe=list(counts) if multi else nfe, branches=branches, branch_weights=weights.describe(),
                   branch_targets=branch_targets, branch_heads=branch_heads,
                   teacher_substeps=teacher_substeps, teacher_solver=teacher_solver,
                   teacher_order_rule=teacher_order_rule, teacher_threshold=plan.teacher_threshold,
                   teacher_history=plan.teacher_history, afs=afs, sigma_min=sigma_min, sigma_max=sigma_max,
                   trajectories=trajectories, batch=batch, lr=lr, lr_schedule=lr_schedule, precision=precision,
                   dropout=dropout, seed=seed, steps=steps, first_trajectory_seed=first_trajectory_seed,
                   trajectory_cache=trajectory_cache, out=str(out),
                   **({} if dense_intervals is None else {"dense_intervals": dense_intervals}))
    if multi:
        options["nfe_draw"] = nfe_draw  # only SFD-v runs carry it: plain runs resume as before
    plan_text = ((sfdv_text(counts, nfe_draw, schedule, batch) + "\n" if multi else "")
                 + f"SFD distillation, K={branches} branches, weights {weights.spec} (at start {weights.at(0, steps)}, "
                 f"at end {weights.at(steps, steps)}), {targets_text(plan, branch_targets)}\n"
                 + "\n".join(p.describe() for p in plans.values()) + "\n"
                 f"iterations: {steps} x batch {batch} = {steps * batch} trajectories; Adam lr {lr}"
                 + (" (/ 10 at half way); " if lr_schedule == "step-half" else f" ({lr_schedule}); ")
                 + (f"{len(plan.trained_intervals())} optimizer steps per iteration; "
                    f"teacher NFE per trajectory {plan.teacher_nfe()}, student NFE {plan.nfe}" if not multi else
                    "optimizer steps per iteration = the NFE drawn; teacher NFE per trajectory "
                    + ", ".join(f"{p.teacher_nfe()} (NFE {n})" for n, p in plans.items()))
                 + (f"; student dropout {dropout}" if dropout else "")
                 + (f"; intermediate branches trained in the first {dense_intervals} trained interval(s) only"
                    if dense_intervals is not None else "")
                 + (f"; trajectories from noise seed {first_trajectory_seed}" if first_trajectory_seed else "")
                 + ("\nbranch heads: block (branches 1.." + str(branches - 1) + " each run their own copy of the "
                    "network's last stage, the final up-block resnet + output norm + conv, initialised from the "
                    "teacher; the endpoint keeps the network's own; export drops the copies)"
                    if branch_heads == "block" else "")
                 + defaults_line)
    if dry_run:
        return {"plan": plan_text, "options": options}
    cfg = TrainConfig(steps=steps, lr=lr, lr_schedule=lr_schedule, precision=precision, seed=seed,
                      checkpoint_every=checkpoint_every, log_every=log_every, progress=progress, device=device,
                      snapshot_steps=tuple(sorted({max(1, round(f * steps)) for f in snapshot_fractions})),
                      on_snapshot=on_snapshot, fast_path=fast_path)
    source = None
    if trajectory_cache and multi:  # PATH/nfeN per count, checked before the run directory is made
        from .counts import iterations_per_count
        from .sfdv import open_caches
        pools = {n: c * batch for n, c in iterations_per_count(schedule).items()}
        source = open_caches(trajectory_cache, plans, options["teacher_digest"], first_trajectory_seed, pools)
    elif trajectory_cache:  # checked before the run directory is made
        from .cache import TrajectoryCache
        source = TrajectoryCache.open(trajectory_cache, teacher_digest=options["teacher_digest"], plan=plan)
        if source.first_seed != first_trajectory_seed:
            raise BdenseError(f"the cache starts at noise seed {source.first_seed}, the run at "
                              f"{first_trajectory_seed}; use a cache written with --first-seed {first_trajectory_seed}")
        if source.size < steps * batch:
            raise BdenseError(f"the cache holds {source.size} trajectories but the run needs {steps * batch}; "
                              f"lower --trajectories or make a larger cache")
    run = RunDir(out, options, resume=resume)
    run.log(plan_text.replace("\n", "\n    "))
    torch.manual_seed(seed)
    student = widen(teacher, branches, dropout=dropout or None, heads=branch_heads)
    if multi:
        from ...models.nfe_embedding import with_nfe_embedding
        student = with_nfe_embedding(student, counts)
    from ...train import speed  # GPU speed options (all off by default: the CPU path stays bit-identical)
    if compile_teacher:  # the teacher is only ever run forward: compile it once for the whole run
        speed.compile_net(teacher, compile_mode)
    if compile_student:
        speed.compile_net(student, compile_mode)
    if teacher_batch and teacher_batch != batch and source is None:
        source = speed.PrefetchedTeacher(teacher, plan, seed, batch, steps * batch, teacher_batch // batch,
                                         first_seed=first_trajectory_seed)
    if multi:
        from .sfdv import SFDvTask
        task = SFDvTask(teacher, student, plans, schedule, weights, batch, seed, sources=source,
                        targets=branch_targets, first_seed=first_trajectory_seed, dense_intervals=dense_intervals)
    else:
        task = SFDTask(teacher, student, plan, weights, batch, seed, trajectory_source=source, pool=steps * batch,
                       targets=branch_targets, first_seed=first_trajectory_seed, dense_intervals=dense_intervals)
    trainer = Trainer(task, run, cfg)
    if isinstance(source, speed.PrefetchedTeacher):
        source.autocast = trainer.autocast  # the teacher rollout in the run's precision, as without prefetching
    if compile_teacher or compile_student or isinstance(source, speed.PrefetchedTeacher) or trainer.fast:
        run.log(f"speed: compile teacher {compile_teacher}, student {compile_student} (mode {compile_mode or 'default'}"
                f"), teacher batch {teacher_batch or batch}, fused Adam without host syncs {trainer.fast}", echo=False)
    result = trainer.run(resume=resume)
    if result["completed"] and trainer.acc.is_main_process:
        speed.uncompile_net(student)  # the sample grid below runs at another batch size: no second compile
        student.load_state_dict(trainer.final_weights())
        meta = dict(student_meta(teacher, teacher_path, run.path), sampling=sfd_student_recipe(plan),
                    distill={"method": "sfd", "branches": branches, "weights": weights.describe(),
                             "branch_targets": branch_targets, "branch_heads": branch_heads, "dropout": dropout,
                             **({} if dense_intervals is None else {"dense_intervals": dense_intervals}),
                             "teacher_substeps": teacher_substeps,
                             **teacher_fields(plan),
                             "targets": [[plan.target_index(i, k) for k in range(1, branches + 1)]
                                         for i in range(plan.points - 1)],
                             "trajectories": steps * batch, "seed": seed,
                             **(sfdv_meta(counts, nfe_draw, schedule, plans, branches) if multi else {})})
        student.config["meta"] = meta
        save_model(run.path / "model.safetensors", student.eval())
        _write_grid(student, run.path / "samples.png", grid_seeds, trainer.device)
        run.log(f"wrote {run.path / 'model.safetensors'}")
    return result


def sfdv_text(counts, draw, schedule, batch) -> str:
    """The --dry-run lines of an SFD-v run: the counts, how they are drawn, what each gets."""
    from ...models.nfe_embedding import counts_text
    from .counts import iterations_per_count
    per = iterations_per_count(schedule)
    return (f"SFD-v: one student for NFE {counts_text(counts)}, told the NFE by a zero-initialised step-count "
            f"embedding; counts drawn {draw}: " + ", ".join(f"NFE {n} {c} iterations ({c * batch} trajectories)"
                                                             for n, c in per.items())
            + "; first draws " + " ".join(str(n) for n, _ in schedule[:12]) + (" ..." if len(schedule) > 12 else ""))


def sfdv_meta(counts, draw, schedule, plans, branches) -> dict:
    """What an SFD-v student records about its training (beside the plain SFD fields)."""
    from .counts import iterations_per_count
    return {"method": "sfd-v", "nfe": list(counts), "nfe_draw": draw,
            "iterations_per_nfe": {str(n): c for n, c in iterations_per_count(schedule).items()},
            "targets": {str(n): [[p.target_index(i, k) for k in range(1, branches + 1)] for i in range(p.points - 1)]
                        for n, p in plans.items()}}


def targets_text(plan: SFDPlan, mode: str) -> str:
    """One line for --dry-run: the target mode and, for anchored modes, how much offset each branch still carries."""
    if plan.branches == 1:
        return f"targets {mode} (K = 1: the endpoint only, plain SFD)"
    if not mode.startswith("anchored"):
        return f"targets {mode}"
    s, t = plan.grids()
    i = plan.trained_intervals()[0]
    sig = [float(t[plan.target_index(i, k)]) for k in range(1, plan.branches + 1)]
    f = closing_factors(mode, float(s[i]), float(s[i + 1]), sig)
    return (f"targets {mode} (branch k = teacher state + f_k * (x - teacher state at t_i); interval {i}: f = "
            + ", ".join(f"{v:.3g}" for v in f) + ")")


TEACHER_ONLY = ("trained_steps", "shipped_as", "stored_dtype", "packed_from_sha256")  # about the teacher file


def student_meta(teacher, teacher_path, run_dir) -> dict:
    """A student's meta: the teacher's (its data, resolution, padding) less what describes the teacher file itself
    (a student was not trained for the teacher's steps), plus the link to the teacher."""
    meta = teacher.config.get("meta", {})
    kept = {k: v for k, v in meta.items() if k not in TEACHER_ONLY}
    if meta.get("shipped_as"):
        kept["teacher_shipped_as"] = meta["shipped_as"]
    return dict(kept, role="student", **_teacher_link(teacher_path, run_dir))


def _teacher_link(teacher_path, run_dir) -> dict:
    """A student names its teacher by absolute path, by path relative to the student file, and by digest."""
    from ...io import link
    lk = link(teacher_path, run_dir)
    return {"teacher": lk["path"], "teacher_rel": lk["rel"], "teacher_digest": lk["digest"]}


def _write_grid(model, path, n, device):
    from ...data.images import save_grid
    from ...sampling.sample import generate, model_recipe
    images = torch.cat([im for _, im, _ in generate(model, list(range(n)), model_recipe(model), device=device)])
    save_grid(images, path)
