"""The SFD host: one run per (NFE, setting, seed), trained from a teacher-trajectory cache the seeds share.

An SFD-v setting (bdense/studies/sfdv.py, e.g. v-bdense:4:uniform:2-5) is one run per seed for all its counts, trained
from the same per-NFE caches (count n gets --trajectories of them, the per-NFE run's own, in its order) and reported
at every compared NFE n it was trained for, sampled with count n, against the per-NFE runs of that NFE."""
from __future__ import annotations

from pathlib import Path

from ..distill.sfd.cache import TrajectoryCache, write_cache
from ..distill.sfd.plan import SFDPlan, teacher_fields, teacher_solver_options
from ..distill.sfd.run import distill_sfd, sfd_student_recipe
from ..errors import BdenseError
from ..sampling.recipe import Recipe
from .common import cached_images, check_reusable, read_json, set_aside, snapshot_list

POOLS = ("shared", "fresh")


def sfd_sampler_recipe(plan: SFDPlan) -> Recipe:
    """The teacher at the student's NFE (grid, AFS) by SFD's DPM-Solver++(3M) sampler, with the plan's teacher
    options (order rule, thresholding, AFS history); SFD's defaults when the plan's teacher is not a dpmpp solver."""
    sfd = plan if plan.teacher_solver.startswith("dpmpp") else SFDPlan(nfe=plan.nfe)
    return Recipe(**dict(sfd_student_recipe(plan), solver="dpmpp_3m", **teacher_solver_options(sfd, afs=plan.afs)))


class SFDHost:
    method = "sfd"
    point_name = "NFE"
    grid_key = "nfe"  # results.json: results["nfe"][str(nfe)]

    @staticmethod
    def check_config(cfg) -> None:
        from ..studies.sfdv import SFDvSetting
        for s in cfg.settings:
            if isinstance(s, SFDvSetting):
                missing = sorted(set(cfg.nfes) - set(s.counts))
                if missing:
                    raise BdenseError(f"SFD-v setting '{s.name}' is trained for NFE {list(s.counts)}, not "
                                      f"{missing}; compare it at its own NFE (--nfe) or widen its range")
                if cfg.pool != "shared":
                    raise BdenseError(f"SFD-v setting '{s.name}' trains from the shared per-NFE caches; use "
                                      f"--pool shared")
                if cfg.seed_block:
                    raise BdenseError(f"SFD-v setting '{s.name}' trains from the block-0 caches; drop --seed-block "
                                      f"or compare per-NFE settings")
                for nfe in s.counts:  # its K against every grid it trains on, before any work
                    SFDPlan(nfe=nfe, branches=s.branches, **teacher_fields(cfg))
                continue
            if s.dropout is not None and not 0 <= s.dropout < 1:
                raise BdenseError(f"setting '{s.name}': dropout must be in [0, 1)")
            for nfe in cfg.nfes:
                SFDPlan(nfe=nfe, branches=s.branches, **teacher_fields(cfg))
        if cfg.student_param != "auto":
            raise BdenseError(f"--student-param {cfg.student_param} converts a progressive-distillation student; "
                              f"SFD students keep the teacher's parameterization: drop it or use --method pd")
        if not isinstance(cfg.trajectories, int) or cfg.trajectories < 1:
            raise BdenseError(f"--trajectories must be an integer >= 1, got {cfg.trajectories!r}")
        if cfg.trajectories < cfg.batch:
            raise BdenseError(f"--trajectories {cfg.trajectories} is smaller than one --batch ({cfg.batch})")
        if cfg.pool not in POOLS:
            raise BdenseError(f"unknown --pool '{cfg.pool}'; use shared or fresh")

    def __init__(self, study):
        self.study, self.cfg, self.teacher = study, study.cfg, study.teacher
        self.out, self.device = study.out, study.device

    def points(self) -> list[int]:
        return list(self.cfg.nfes)

    def tag(self, nfe: int) -> str:
        return f"nfe{nfe}"

    def plan(self, nfe: int) -> SFDPlan:
        return SFDPlan(nfe=nfe, sigma_max=min(80.0, self.teacher.sigma_max), **teacher_fields(self.cfg))

    def first_seed(self, seed: int) -> int:
        """First noise seed of training seed `seed`'s trajectory pool: the seed block's shared pool, or its own
        (fresh). The block's first seed has the same pool either way, so its runs share the two modes' caches."""
        return self.study.block.first_trajectory(seed, self.cfg.trajectories, self.cfg.pool == "fresh")

    def cache(self, nfe: int, seed: int = 0) -> Path:
        first = self.first_seed(seed)
        path = self.out / "cache" / (f"nfe{nfe}" if first == 0 else f"nfe{nfe}-from{first}")
        if self.cfg.move_stale and read_json(path / "manifest.json").get("complete"):
            try:
                TrajectoryCache.open(path, self.study.teacher_digest, self.plan(nfe))
            except BdenseError as e:
                set_aside(path, str(e))
        if not read_json(path / "manifest.json").get("complete"):
            write_cache(self.teacher, self.study.teacher_digest, self.plan(nfe), self.cfg.trajectories, path,
                        batch=self.cfg.batch, shard_size=self.cfg.batch * 50, device=self.device,
                        progress=self.cfg.progress, first_seed=first)
        return path

    def teacher_reference(self, nfe: int, seeds: list):
        """The distillation target from these noise seeds: the teacher solver on the refined grid, in [-1, 1]."""
        import torch
        from ..distill.sfd.trajectories import teacher_trajectories
        return torch.cat([teacher_trajectories(self.teacher, self.plan(nfe), seeds[i:i + 500], self.device)[0][-1]
                          .clamp(-1, 1).cpu() for i in range(0, len(seeds), 500)])

    def refs_key(self, nfe: int) -> str:
        """Names the references of nfe and the teacher rows measured against them: one name per teacher solver, so
        a folder continued with another teacher (e.g. one made before SFD's exact teacher) never reuses them."""
        p = self.plan(nfe)
        return f"nfe{nfe}-" + "-".join(teacher_fields(p).values())

    def references(self, nfe: int) -> dict:
        """The distillation target on the evaluation seeds."""
        return {"rmse": cached_images(self.out / "refs" / f"{self.refs_key(nfe)}.safetensors",
                                      lambda: self.teacher_reference(nfe, self.study.eval_seeds))}

    def teacher_rows(self, nfe: int) -> dict:
        plan = self.plan(nfe)
        own = Recipe.from_dict(self.teacher.config.get("meta", {}).get("sampling") or {})
        return {
            f"teacher reference ({plan.teacher_solver}, {plan.teacher_nfe()} NFE)": "rmse",
            f"teacher {own.solver} {own.nfe} NFE": own.with_overrides(sigma_max=plan.sigma_max),
            f"teacher euler {nfe} NFE": Recipe(**sfd_student_recipe(plan)),
            f"teacher dpmpp_3m {nfe} NFE": sfd_sampler_recipe(plan),
        }

    def start_row(self, nfe: int) -> str:
        """Step 0: every student starts as the teacher, sampled with the student's recipe (Euler + AFS)."""
        return f"teacher euler {nfe} NFE"

    def run_dir(self, nfe: int, setting, seed: int) -> Path:
        return self.out / "runs" / f"nfe{nfe}" / setting.name / f"seed{seed}"

    def train(self, nfe: int, setting, seed: int) -> Path:
        """Train one run from its trajectory cache, or reuse the finished run (which then needs no cache)."""
        from ..studies.sfdv import SFDvSetting, train_sfdv
        cfg, d = self.cfg, self.run_dir(nfe, setting, seed)
        if isinstance(setting, SFDvSetting):  # one run for every NFE, from the per-NFE caches (OUT/cache/nfeN)
            d = self.out / "runs" / "sfdv" / setting.name / f"seed{seed}"
            if not (d / "model.safetensors").exists():
                for n in setting.counts:
                    self.cache(n)
            return train_sfdv(cfg.teacher, d, setting, cfg.trajectories, seed, cache_dir=self.out / "cache",
                              **teacher_fields(cfg), batch=cfg.batch, lr=cfg.lr, device=self.device, progress=cfg.progress,
                              snapshot_fractions=cfg.eval_points, grid_seeds=16)
        kw = setting.distill_options()
        kw.update(nfe=nfe, **teacher_fields(cfg), first_trajectory_seed=self.first_seed(seed), trajectories=cfg.trajectories, batch=cfg.batch,
                  lr=cfg.lr, seed=seed, device=self.device, progress=cfg.progress,
                  snapshot_fractions=cfg.eval_points, grid_seeds=16)
        finished = (d / "model.safetensors").exists()
        if finished or (cfg.move_stale and (d / "options.json").exists()):  # moved aside: trained anew below
            options = distill_sfd(cfg.teacher, str(d), dry_run=True, **kw)["options"]
            if check_reusable(d, options, move_stale=cfg.move_stale) and finished:
                return d
        kw["trajectory_cache"] = str(self.cache(nfe, seed))
        resume = (d / "checkpoints").exists() and any((d / "checkpoints").iterdir())
        distill_sfd(cfg.teacher, str(d), resume=resume, **kw)
        return d

    def steps_total(self, nfe: int) -> int:
        return self.cfg.trajectories // self.cfg.batch

    def snapshots(self, d: Path, nfe: int) -> list:
        counts = read_json(d / "options.json").get("nfe")
        if not isinstance(counts, list):
            return snapshot_list(d)
        # an SFD-v run: measured once per NFE; its steps in per-NFE units (each count gets 1/len of the iterations)
        return [(f"nfe{nfe}/{key}", step // len(counts), p) for key, step, p in snapshot_list(d)]

    def student(self, d: Path, nfe: int):
        from ..studies.sfdv import recipe_at
        from ..models.checkpoint import load_model
        m = load_model(d / "model.safetensors", device=self.device)
        return m, recipe_at(m, nfe)

    def describe(self) -> dict:
        from ..studies.sfdv import SFDvSetting
        cfg = self.cfg
        pool = ("seed = its own pool of trajectories: the block's i-th seed draws noise seeds from "
                f"{self.study.block.base} + i x budget" if cfg.pool == "fresh"
                else f"seed = order of the shared trajectory pool (noise seeds from {self.study.block.base})")
        return {"host": "SFD", "metrics": {"fid": "domain FID", "rmse": "RMSE to teacher reference"},
                "budget": f"{cfg.trajectories} teacher trajectories (batch {cfg.batch}, lr {cfg.lr})" + "".join(
                    f"; SFD-v setting {s.name}: {cfg.trajectories} per count x {len(s.counts)} counts = "
                    f"{cfg.trajectories * len(s.counts)}" for s in cfg.settings if isinstance(s, SFDvSetting)),
                "seeds": pool, "progress_unit": ["trajectories seen (thousands)", cfg.batch / 1000],
                "agreement": "RMSE to the teacher reference (teacher solver on the refined grid)",
                "pairing": "same seed = same trajectories in the same order",
                "noise_note": "" if cfg.pool == "fresh" else (
                    " With a shared pool the intervals show optimisation noise only, not the noise of drawing a new "
                    "pool (--pool fresh).")}

    # -- what `bdense tune` needs (bdense/studies/tune.py): short runs from one shared cache, scored at --nfe -----------
    def tune_setup(self, tcfg, points) -> dict:
        """What a study's trials depend on: a continued study must match it."""
        return {"teacher_digest": self.study.teacher_digest, "nfe": tcfg.nfe, "branches": tcfg.branches,
                "objective": tcfg.objective, "trial_trajectories": tcfg.trial_trajectories, "batch": tcfg.batch,
                "lr": tcfg.lr, "tune_seeds": tcfg.tune_seeds, **teacher_fields(self.plan(tcfg.nfe)),
                "branch_targets": tcfg.branch_targets, "report_points": list(points),
                **({} if tcfg.branch_heads == "shared" else {"branch_heads": tcfg.branch_heads})}

    def tune_prepare(self, tcfg, seeds: list, folder: Path):
        """The shared trajectory cache, and the reference images of the tuning seeds (the distillation target)."""
        self.tune_cache = self.cache(tcfg.nfe, self.study.block.run_seeds(1)[0])
        return cached_images(folder / f"refs-nfe{tcfg.nfe}-{len(seeds)}.safetensors",
                             lambda: self.teacher_reference(tcfg.nfe, seeds))

    def tune_iterations(self, tcfg) -> int:
        return tcfg.trial_trajectories // tcfg.batch

    def tune_student(self, tcfg, k: int):
        from ..models.branches import widen
        return widen(self.teacher, k, heads=tcfg.branch_heads)

    def tune_recipe(self, tcfg, step: int) -> Recipe:
        return Recipe(**sfd_student_recipe(self.plan(tcfg.nfe)))

    def tune_run_options(self, tcfg, k: int, spec, device: str, fractions: tuple) -> dict:
        """distill_sfd keywords of one trial: the first --trial-trajectories of the cache, the block's first seed."""
        return dict(nfe=tcfg.nfe, branches=k, branch_weights=spec, branch_targets=tcfg.branch_targets,
                    branch_heads=tcfg.branch_heads,
                    teacher_solver=tcfg.teacher_solver, trajectories=tcfg.trial_trajectories, batch=tcfg.batch,
                    lr=tcfg.lr, seed=self.study.block.run_seeds(1)[0], device=device, progress=False, checkpoint_every=0,
                    trajectory_cache=str(self.tune_cache), grid_seeds=1, snapshot_fractions=fractions)

    def tune_cost(self, tcfg, n_seeds: int, iters: int) -> dict:
        plan = self.plan(tcfg.nfe)
        return {"teacher_passes": (tcfg.trajectories + n_seeds) * plan.teacher_nfe(),
                "cache_trajectories": tcfg.trajectories, "teacher_nfe": plan.teacher_nfe(),
                "student_train_passes": iters * len(plan.trained_intervals()) * tcfg.batch,
                "full_runs_equivalent": iters / (tcfg.trajectories // tcfg.batch)}

    def tune_words(self, tcfg) -> dict:
        k, tg = tcfg.branches, f":targets={tcfg.branch_targets}"
        tg += "" if tcfg.branch_heads == "shared" else f":heads={tcfg.branch_heads}"
        return {"title": f"SFD NFE {tcfg.nfe}", "trial": f"each trial {tcfg.trial_trajectories} trajectories of one "
                "shared cache", "fraction": tcfg.trial_trajectories / tcfg.trajectories,
                "reproduce": f"`bdense compare --teacher OTHER --out DIR --nfe N --setting baseline:1 --setting "
                             f"uniform:{k}:uniform{tg} --setting 'tuned:{k}:SPEC{tg}'` or `bdense tune --apply 'SPEC' "
                             f"--teacher OTHER --out DIR`"}
