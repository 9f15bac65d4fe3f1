"""The progressive-distillation host: one run per (setting, seed) trains every round; each round is a point.

A round halves the student's steps, so the report gets a row per (setting, step count) the way the PD tables do.
Snapshots are taken at the same fractions of every round and evaluated with that round's step count. Students are
compared with the teacher's DDIM from the same evaluation seeds: at --start-steps (the distillation target of the
whole chain, metric rmse) and at twice the student's steps (the target of that round, metric rmse2n).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..distill.pd.plan import PDPlan
from ..errors import BdenseError
from ..sampling.recipe import Recipe
from .common import cached_images, check_reusable, snapshot_list


class PDHost:
    method = "pd"
    point_name = "steps"
    grid_key = "steps"  # results.json: results["steps"][str(student steps)], one entry per round

    @staticmethod
    def plan_of(cfg, branches: int = 1) -> PDPlan:
        return PDPlan(start_steps=cfg.start_steps, end_steps=cfg.end_steps, branches=branches,
                      round_iters=cfg.round_iters, last_step_target=cfg.last_step_target, weight_span=cfg.weight_span)

    @staticmethod
    def check_config(cfg) -> None:
        for s in cfg.settings:
            if s.targets is not None or s.dropout is not None or s.dense is not None or s.heads is not None:
                raise BdenseError(f"setting '{s.name}': targets=, dropout=, dense= and heads= are SFD options; a pd "
                                  f"setting is name:K[:WEIGHTS], e.g. bdense:2 or end:2:end:0.5")
            PDHost.plan_of(cfg, s.branches)
        from ..distill.pd.run import check_student_param
        check_student_param(cfg.student_param)

    def __init__(self, study):
        self.study, self.cfg, self.teacher = study, study.cfg, study.teacher
        self.out, self.device = study.out, study.device
        if self.teacher.config.get("kind") != "vp":
            raise BdenseError(f"{self.cfg.teacher} is an EDM model; --method pd needs a VP teacher "
                              f"(train-teacher --parameterization eps|x|v, or a diffusers DDPM)")
        self.plan = replace(self.plan_of(self.cfg), sigma_min=self.teacher.sigma_min, sigma_max=self.teacher.sigma_max)
        self.done: set = set()  # (setting, seed) trained or checked in this process

    def points(self) -> list[int]:
        return self.plan.rounds

    def tag(self, n: int) -> str:
        return f"steps{n}"

    def ddim(self, n: int) -> Recipe:
        return Recipe(**self.plan.recipe(n, clip=self.cfg.eval_clip_denoised))

    def ddim_images(self, n: int, seeds: list):
        """The teacher's n-step DDIM from these noise seeds (sampled as the students are: clipped or not)."""
        import torch
        from ..sampling.sample import generate
        return torch.cat([im for _, im, _ in generate(self.teacher, seeds, self.ddim(n), 500, self.device)])

    def teacher_ddim(self, n: int):
        name = f"ddim{n}" + ("-clip" if self.cfg.eval_clip_denoised else "")
        return cached_images(self.out / "refs" / f"{name}.safetensors",
                             lambda: self.ddim_images(n, self.study.eval_seeds))

    def refs_key(self, n: int) -> str:
        """Names the teacher rows of n in OUT/refs/teacher-evals.json."""
        return self.tag(n)

    def references(self, n: int) -> dict:
        return {"rmse": self.teacher_ddim(self.cfg.start_steps), "rmse2n": self.teacher_ddim(2 * n)}

    def teacher_rows(self, n: int) -> dict:
        return {f"teacher DDIM {self.cfg.start_steps} steps": "rmse", f"teacher DDIM {2 * n} steps": "rmse2n",
                f"teacher DDIM {n} steps": self.ddim(n)}

    def start_row(self, n: int) -> str:
        return f"teacher DDIM {n} steps"

    def run_dir(self, setting, seed: int) -> Path:
        return self.out / "runs" / setting.name / f"seed{seed}"

    def round_of(self, n: int) -> int:
        return self.plan.rounds.index(n)

    def train(self, n: int, setting, seed: int) -> Path:
        """Train every round of one (setting, seed) on the first call, or reuse the finished run."""
        from ..distill.pd.run import distill_pd
        cfg, d = self.cfg, self.run_dir(setting, seed)
        if (setting.name, seed) in self.done:
            return d
        r_it = cfg.round_iters
        snaps = {r * r_it + max(1, round(f * r_it)) for r in range(len(self.plan.rounds)) for f in cfg.eval_points}
        kw = dict(self.run_options(setting.branches, setting.weights, r_it, self.device), seed=seed,
                  progress=cfg.progress, grid_seeds=16, snapshot_steps=tuple(sorted(snaps)))
        finished = (d / "model.safetensors").exists()
        if finished or (cfg.move_stale and (d / "options.json").exists()):
            # runs made before --student-param existed trained the teacher's own parameterization
            own = {"student_param": self.teacher.config["vp"]["parameterization"]}
            options = distill_pd(cfg.teacher, str(d), dry_run=True, **kw)["options"]
            finished = check_reusable(d, options, missing=own, move_stale=cfg.move_stale) and finished
        if not finished:
            resume = (d / "checkpoints").exists() and any((d / "checkpoints").iterdir())
            distill_pd(cfg.teacher, str(d), resume=resume, **kw)
        self.done.add((setting.name, seed))
        return d

    def run_options(self, k: int, weights, round_iters: int, device) -> dict:
        """distill_pd keywords every PD run of this study shares (compare's runs and tune's trials)."""
        cfg = self.cfg
        return dict(data=cfg.data, branches=k, branch_weights=weights, start_steps=cfg.start_steps,
                    end_steps=cfg.end_steps, round_iters=round_iters, batch=cfg.batch, lr=cfg.lr, device=device,
                    last_step_target=cfg.last_step_target, weight_span=cfg.weight_span,
                    eval_clip_denoised=cfg.eval_clip_denoised, student_param=cfg.student_param)

    def steps_total(self, n: int) -> int:
        return self.cfg.round_iters

    def snapshots(self, d: Path, n: int) -> list:
        lo = self.round_of(n) * self.cfg.round_iters
        return snapshot_list(d, lo, lo + self.cfg.round_iters)

    def student(self, d: Path, n: int):
        """The run's student as it was at the end of the round that made it an n-step sampler."""
        from ..models.checkpoint import load_model, load_snapshot
        m = load_model(d / "model.safetensors", device=self.device)
        end = [p for _, step, p in self.snapshots(d, n) if step == self.cfg.round_iters]
        if not end:
            raise BdenseError(f"{d} has no snapshot at the end of the {n}-step round; delete that run directory")
        load_snapshot(m, end[0], "delete that run directory to train it again")
        return m.eval(), self.ddim(n)

    def describe(self) -> dict:
        cfg, p = self.cfg, self.plan
        clip = "x-prediction clipped to [-1, 1] at every step" if cfg.eval_clip_denoised else "no clipping"
        return {"host": "progressive distillation",
                "metrics": {"fid": "domain FID", "rmse": f"RMSE to teacher DDIM {cfg.start_steps}",
                            "rmse2n": "RMSE to teacher DDIM 2N"},
                "budget": (f"{len(p.rounds)} rounds {cfg.start_steps} -> {cfg.end_steps} steps, {cfg.round_iters} "
                           f"iterations each (batch {cfg.batch}, lr {cfg.lr} annealed to 0 every round), last-step "
                           f"target {cfg.last_step_target}, weight schedules span: {cfg.weight_span}"),
                "seeds": "seed = the data batches and noise draws of the run",
                "progress_unit": ["iterations within the round", 1],
                "agreement": (f"RMSE to the teacher's DDIM at {cfg.start_steps} steps (rmse) and at twice the "
                              f"student's steps (rmse2n), same evaluation seeds, {clip}"),
                "pairing": "same seed = same data batches and noise", "noise_note": ""}

    # -- what `bdense tune` needs (bdense/studies/tune.py): a trial is a PD run over every round, --trial-round-iters
    # -- iterations each, scored at the last round's --end-steps against the teacher's DDIM at --start-steps
    def tune_setup(self, tcfg, points) -> dict:
        from ..distill.pd.run import student_parameterization
        cfg = self.cfg
        return {"teacher_digest": self.study.teacher_digest, "method": "pd", "branches": tcfg.branches,
                "objective": tcfg.objective, "start_steps": cfg.start_steps, "end_steps": cfg.end_steps,
                "trial_round_iters": tcfg.trial_round_iters, "batch": cfg.batch, "lr": cfg.lr,
                "tune_seeds": tcfg.tune_seeds, "last_step_target": cfg.last_step_target,
                "weight_span": cfg.weight_span, "eval_clip_denoised": cfg.eval_clip_denoised,
                "student_param": student_parameterization(self.teacher, cfg.student_param),
                "report_points": list(points)}

    def tune_prepare(self, tcfg, seeds: list, folder: Path):
        """The teacher's DDIM at --start-steps from the tuning seeds (the target of the whole chain)."""
        n = self.cfg.start_steps
        name = f"refs-ddim{n}{'-clip' if self.cfg.eval_clip_denoised else ''}-{len(seeds)}.safetensors"
        return cached_images(folder / name, lambda: self.ddim_images(n, seeds))

    def tune_iterations(self, tcfg) -> int:
        return len(self.plan.rounds) * tcfg.trial_round_iters

    def tune_student(self, tcfg, k: int):
        """A model of the trial's student (widened, its head converted as distill_pd converts it)."""
        from ..distill.pd.run import pd_student, student_parameterization
        return pd_student(self.teacher, k, student_parameterization(self.teacher, self.cfg.student_param))

    def tune_recipe(self, tcfg, step: int) -> Recipe:
        """A snapshot at global iteration `step` samples with the step count of its round."""
        r = min(max(step - 1, 0) // tcfg.trial_round_iters, len(self.plan.rounds) - 1)
        return self.ddim(self.plan.rounds[r])

    def tune_run_options(self, tcfg, k: int, spec, device: str, fractions: tuple) -> dict:
        """distill_pd keywords of one trial, the block's first seed; snapshots at `fractions` of all its iterations."""
        total = self.tune_iterations(tcfg)
        snaps = tuple(sorted({max(1, round(f * total)) for f in fractions}))
        return dict(self.run_options(k, spec, tcfg.trial_round_iters, device), seed=self.study.block.run_seeds(1)[0],
                    progress=False, checkpoint_every=0, grid_seeds=1, snapshot_steps=snaps)

    def tune_cost(self, tcfg, n_seeds: int, iters: int) -> dict:
        """Each iteration: 2 teacher DDIM steps and one student pass per image; references: start-steps DDIM."""
        return {"teacher_passes": 2 * iters * self.cfg.batch + n_seeds * self.cfg.start_steps,
                "student_train_passes": iters * self.cfg.batch,
                "full_runs_equivalent": iters / (len(self.plan.rounds) * self.cfg.round_iters)}

    def tune_words(self, tcfg) -> dict:
        cfg, k = self.cfg, tcfg.branches
        steps = f"--start-steps {cfg.start_steps} --end-steps {cfg.end_steps}"
        return {"title": f"PD {cfg.start_steps} -> {cfg.end_steps} steps",
                "trial": (f"each trial a PD run of {len(self.plan.rounds)} rounds x {tcfg.trial_round_iters} "
                          f"iterations (seed 0), scored at {cfg.end_steps} steps against the teacher's "
                          f"{cfg.start_steps}-step DDIM"), "fraction": tcfg.trial_round_iters / cfg.round_iters,
                "reproduce": f"`bdense compare --method pd --teacher OTHER --out DIR {steps} --setting baseline:1 "
                             f"--setting uniform:{k}:uniform --setting 'tuned:{k}:SPEC'` or `bdense tune --method pd "
                             f"{steps} --apply 'SPEC' --teacher OTHER --out DIR`"}
