"""`bdense compare`: baseline (K = 1) against B-DENSE settings, same teacher, same trajectory pool, several seeds.

Every run, cache and evaluation lands under OUT and is reused when it exists, so a long comparison can be
stopped and continued. Quality is measured on held-out evaluation seeds (never used for training
trajectories) at several points of training and at several NFE; the report is written by eval/report.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..distill.plan import SFDPlan
from ..distill.run import distill_sfd, sfd_student_recipe
from ..distill.targets import check_mode
from ..distill.weights import parse_weights
from ..errors import BdenseError
from ..io import atomic_write_text, file_digest
from ..models.checkpoint import load_model
from ..sampling.recipe import Recipe
from ..train.rundir import changed_options, list_snapshots
from ..sampling.sample import generate

EVAL_SEED_BASE = 1_000_000_000_000  # evaluation noise seeds live far from every training pool


SETTING_KEYS = {"targets": str, "dropout": float, "dense": int}  # name:K[:WEIGHTS][:key=value...]


@dataclass(frozen=True)
class Setting:
    name: str
    branches: int
    weights: str | None = None  # None: the distiller's default
    targets: str | None = None  # None: the distiller's default (bdense/distill/targets.py)
    dropout: float | None = None
    dense: int | None = None  # dense_intervals: intermediate branches in the first N trained intervals only

    @classmethod
    def parse(cls, spec: str) -> "Setting":
        """'name:K[:WEIGHTS][:targets=MODE][:dropout=P][:dense=N]' with any branch-weight spec (bdense/distill/weights.py).

        Weight specs never hold '=', so trailing key=value fields are options and the rest is the weight spec."""
        fields = spec.split(":")
        extra = {}
        while len(fields) > 2 and "=" in fields[-1]:
            key, _, value = fields.pop().partition("=")
            if key not in SETTING_KEYS:
                raise BdenseError(f"setting '{spec}': unknown option '{key}'; use {', '.join(SETTING_KEYS)}")
            try:
                extra[key] = SETTING_KEYS[key](value)
            except ValueError:
                raise BdenseError(f"setting '{spec}': cannot read {key}={value}") from None
        try:
            setting = cls(fields[0], int(fields[1]), ":".join(fields[2:]) or None, **extra)
        except (IndexError, ValueError):
            raise BdenseError(f"cannot read setting '{spec}'; write name:K[:WEIGHTS][:targets=MODE], "
                              f"e.g. baseline:1, bdense:4:1,1,1,2 or ramp:4:ramp:targets=anchored") from None
        parse_weights(setting.weights, setting.branches)  # refuse a bad spec before any training
        if setting.targets is not None:
            check_mode(setting.targets)
        if setting.dense is not None and setting.dense < 0:
            raise BdenseError(f"setting '{spec}': dense must be >= 0 (trained intervals with dense branches)")
        if setting.dropout is not None and not 0 <= setting.dropout < 1:
            raise BdenseError(f"setting '{spec}': dropout must be in [0, 1)")
        return setting

    def distill_options(self) -> dict:
        """The distill_sfd keywords this setting fixes (unset ones keep the distiller's defaults)."""
        kw = {"branches": self.branches, "branch_weights": self.weights}
        kw.update({k: v for k, v in (("branch_targets", self.targets), ("dropout", self.dropout),
                                     ("dense_intervals", self.dense)) if v is not None})
        return kw


@dataclass
class CompareConfig:
    teacher: str
    out: str
    nfes: tuple = (2, 3)
    settings: tuple = (Setting("baseline", 1), Setting("bdense", 4))
    seeds: int = 3
    trajectories: int = 19200
    batch: int = 128
    lr: float = 2e-4
    eval_points: tuple = (0.1, 0.25, 0.5, 1.0)
    eval_seeds: int = 1000
    data: str | None = None
    features: str | None = None
    teacher_solver: str = "dpmpp_3m"
    teacher_order_rule: str = "sfd"
    pool: str = "shared"  # shared: seeds reorder one trajectory pool; fresh: seed s trains on its own pool
    device: str | None = None
    progress: bool = True
    feature_steps: int = 1000  # steps of the domain feature net trained into OUT when --features is not given

    def __post_init__(self):
        """The whole grid is checked here, before a cache, baseline or run is made: no late failures."""
        from ..options import FracList, IntList
        self.nfes = IntList(1, 8)("--nfe", ",".join(str(n) for n in self.nfes))
        points = FracList()("--eval-points", ",".join(repr(float(p)) for p in self.eval_points))
        self.eval_points = tuple(sorted(set(points) | {1.0}))  # the report's verdicts need the end of training
        if not self.settings or self.settings[0].branches != 1:
            raise BdenseError("the first --setting must be the baseline with K = 1 (e.g. baseline:1)")
        if len({s.name for s in self.settings}) != len(self.settings):
            raise BdenseError("setting names must be unique")
        for s in self.settings:
            if not s.name or "/" in s.name or s.name in (".", ".."):
                raise BdenseError(f"setting name '{s.name}' cannot be a directory name; use letters, digits, - or _")
            for nfe in self.nfes:
                SFDPlan(nfe=nfe, branches=s.branches, teacher_solver=self.teacher_solver,
                        teacher_order_rule=self.teacher_order_rule)
        for name, v, lo in (("--seeds", self.seeds, 1), ("--eval-seeds", self.eval_seeds, 2),
                            ("--batch", self.batch, 1), ("--trajectories", self.trajectories, 1)):
            if not isinstance(v, int) or v < lo:
                raise BdenseError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.trajectories < self.batch:
            raise BdenseError(f"--trajectories {self.trajectories} is smaller than one --batch ({self.batch})")
        if self.pool not in POOLS:
            raise BdenseError(f"unknown --pool '{self.pool}'; use shared or fresh")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            raise BdenseError(f"--lr must be a finite number in (0, 1], got {self.lr!r}")


POOLS = ("shared", "fresh")


def _read_json(path: Path) -> dict:
    from ..io import read_json_file
    return read_json_file(path, f"delete {path} so that it is made again")


def check_reusable(d: Path, options: dict) -> None:
    """A finished run is reused only if it was trained with the options this comparison asks for.

    Without this, changing --trajectories, --lr or a setting's weights but keeping --out would silently report
    the old runs under the new settings.
    """
    # the cache itself is checked against teacher and plan, so its path may differ; with K = 1 every target mode
    # is the same computation (tested bit for bit), so a baseline made under another default mode is still valid
    old = _read_json(d / "options.json")
    free = {"trajectory_cache"} | ({"branch_targets"} if old.get("branches") == options.get("branches") == 1 else set())
    diff = changed_options(old, options, free=free)
    if diff:
        raise BdenseError(f"{d} holds a finished run made with other options ({', '.join(diff)}); "
                          f"use another --out or a new setting name, or delete that run directory")


class Comparison:
    def __init__(self, cfg: CompareConfig):
        from ..data.datasets import teacher_data
        from ..io import check_out_dir
        check_out_dir("--out", cfg.out, [cfg.teacher, cfg.features])
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.teacher = load_model(cfg.teacher, device=self.device)
        if self.teacher.branches != 1:
            raise BdenseError(f"{cfg.teacher} has {self.teacher.branches} branches; compare a single-branch teacher "
                              f"(bdense export it first)")
        self.teacher_digest = file_digest(cfg.teacher)
        self.shape = teacher_data(self.teacher, cfg.data)  # the data as the teacher saw it (resolution, padding)
        self.data = self.shape["spec"]
        if not self.data:
            raise BdenseError("the teacher does not name its data set; pass --data for the FID reference")
        if cfg.features:
            from .features import load_extractor
            ext = load_extractor("domain", cfg.features)
            a = ext.config["arch"]
            if (a["channels"], a["resolution"]) != (self.teacher.channels, self.teacher.resolution):
                raise BdenseError(f"--features {cfg.features} was trained on {a['channels']}x{a['resolution']}px "
                                  f"images but the teacher makes {self.teacher.channels}x{self.teacher.resolution}px; "
                                  f"train one with bdense train-features --resolution {self.teacher.resolution}")
        self.eval_seeds = [EVAL_SEED_BASE + i for i in range(cfg.eval_seeds)]
        self.out.mkdir(parents=True, exist_ok=True)

    # -- shared assets ---------------------------------------------------------------
    def extractor_and_ref(self):
        from .features import load_extractor, train_domain_classifier
        from .fid import feature_stats, load_stats, save_stats
        feats = Path(self.cfg.features) if self.cfg.features else self.out / "features.safetensors"
        res, pad = self.shape["resolution"], self.shape["pad"]
        if not feats.exists():
            train_domain_classifier(self.data, feats, steps=self.cfg.feature_steps, device=self.device,
                                    resolution=res, pad=pad)
        ext = load_extractor("domain", feats, self.device)
        ref_path = self.out / "ref-stats.npz"
        if not ref_path.exists():
            from ..data.datasets import load_dataset
            images = load_dataset(self.data, resolution=res, pad=pad).images
            save_stats(ref_path, feature_stats(ext, images.split(500)), ext, data=self.data)
        return ext, load_stats(ref_path)

    def plan(self, nfe: int) -> SFDPlan:
        return SFDPlan(nfe=nfe, teacher_solver=self.cfg.teacher_solver, teacher_order_rule=self.cfg.teacher_order_rule,
                       sigma_max=min(80.0, self.teacher.sigma_max))

    def first_seed(self, seed: int) -> int:
        """First noise seed of training seed `seed`'s trajectory pool: 0 for all (shared) or its own block (fresh).
        Seed 0's pool is the same either way, so its runs are shared between the two modes' caches."""
        return seed * self.cfg.trajectories if self.cfg.pool == "fresh" else 0

    def cache(self, nfe: int, seed: int = 0) -> Path:
        from ..distill.cache import write_cache
        first = self.first_seed(seed)
        path = self.out / "cache" / (f"nfe{nfe}" if first == 0 else f"nfe{nfe}-from{first}")
        manifest = path / "manifest.json"
        if not _read_json(manifest).get("complete"):
            write_cache(self.teacher, self.teacher_digest, self.plan(nfe), self.cfg.trajectories, path,
                        batch=self.cfg.batch, shard_size=self.cfg.batch * 50, device=self.device,
                        progress=self.cfg.progress, first_seed=first)
        return path

    def reference_images(self, nfe: int) -> torch.Tensor:
        """The distillation target on the evaluation seeds: the teacher solver on the refined grid."""
        path = self.out / "refs" / f"nfe{nfe}.safetensors"
        if path.exists():
            from safetensors.torch import load_file
            return load_file(str(path))["images"]
        from ..distill.trajectories import teacher_trajectories
        plan, chunks = self.plan(nfe), []
        for i in range(0, len(self.eval_seeds), 500):
            traj, _ = teacher_trajectories(self.teacher, plan, self.eval_seeds[i:i + 500], self.device)
            chunks.append(traj[-1].clamp(-1, 1).cpu())
        images = torch.cat(chunks)
        from safetensors.torch import save as st_save
        from ..io import atomic_write_bytes
        atomic_write_bytes(path, st_save({"images": images.contiguous()}))
        return images

    # -- measuring ---------------------------------------------------------------------
    def measure(self, model, recipe: Recipe, ref_images: torch.Tensor, ext, ref_stats) -> dict:
        from .agreement import image_agreement
        from .fid import RunningStats, frechet_distance
        stats, pairs, start = RunningStats(), [], 0
        for _, im, _ in generate(model, self.eval_seeds, recipe, batch_size=500, device=self.device):
            stats.update(ext(im))
            pairs.append((im, ref_images[start:start + len(im)]))
            start += len(im)
        agree = image_agreement(pairs)
        return {"rmse": agree["rmse"], "psnr": agree["psnr"],
                "fid": frechet_distance(stats.mu, stats.sigma, ref_stats["mu"], ref_stats["sigma"])}

    def teacher_rows(self, nfe: int, ref_images, ext, ref_stats) -> dict:
        path = self.out / "refs" / "teacher-evals.json"
        done = _read_json(path)
        plan = self.plan(nfe)
        own = Recipe.from_dict(self.teacher.config.get("meta", {}).get("sampling") or {})
        rows = {
            f"teacher reference ({plan.teacher_solver}, {plan.teacher_nfe()} NFE)": None,
            f"teacher {own.solver} {own.nfe} NFE": own.with_overrides(sigma_max=plan.sigma_max),
            f"teacher euler {nfe} NFE": Recipe(**sfd_student_recipe(plan)),
            f"teacher dpmpp_3m {nfe} NFE": Recipe(**dict(sfd_student_recipe(plan), solver="dpmpp_3m")),
        }
        out = {}
        for name, recipe in rows.items():
            key = f"nfe{nfe}/{name}"
            if key not in done:
                if recipe is None:
                    from .fid import feature_stats, frechet_distance
                    st = feature_stats(ext, ref_images.split(500))
                    done[key] = {"rmse": 0.0, "psnr": float("inf"),
                                 "fid": frechet_distance(st.mu, st.sigma, ref_stats["mu"], ref_stats["sigma"])}
                else:
                    done[key] = self.measure(self.teacher, recipe, ref_images, ext, ref_stats)
                atomic_write_text(path, json.dumps(done, indent=1))
            out[name] = done[key]
        return out

    # -- the grid of runs ------------------------------------------------------------------
    def run_dir(self, nfe: int, setting: Setting, seed: int) -> Path:
        return self.out / "runs" / f"nfe{nfe}" / setting.name / f"seed{seed}"

    def train(self, nfe: int, setting: Setting, seed: int) -> Path:
        """Train one run from its trajectory cache, or reuse the finished run (which then needs no cache)."""
        d = self.run_dir(nfe, setting, seed)
        kw = dict(nfe=nfe, **setting.distill_options(), teacher_solver=self.cfg.teacher_solver,
                  teacher_order_rule=self.cfg.teacher_order_rule, first_trajectory_seed=self.first_seed(seed),
                  trajectories=self.cfg.trajectories, batch=self.cfg.batch,
                  lr=self.cfg.lr, seed=seed, device=self.device, progress=self.cfg.progress,
                  snapshot_fractions=self.cfg.eval_points, grid_seeds=16)
        if (d / "model.safetensors").exists():
            check_reusable(d, distill_sfd(self.cfg.teacher, str(d), dry_run=True, **kw)["options"])
            return d
        kw["trajectory_cache"] = str(self.cache(nfe, seed))
        resume = (d / "checkpoints").exists() and any((d / "checkpoints").iterdir())
        distill_sfd(self.cfg.teacher, str(d), resume=resume, **kw)
        return d

    def evaluate_run(self, d: Path, ref_images, ext, ref_stats) -> dict:
        from safetensors.torch import load_file
        path = d / "evals.json"
        done = _read_json(path)
        student = load_model(d / "model.safetensors", device=self.device)
        recipe = Recipe.from_dict(student.config["meta"]["sampling"])
        snaps = list_snapshots(d)
        for step, p in snaps.items():
            if str(step) not in done:
                student.load_state_dict(load_file(str(p)))
                done[str(step)] = self.measure(student.eval(), recipe, ref_images, ext, ref_stats)
                atomic_write_text(path, json.dumps(done, indent=1))
        return {int(k): v for k, v in done.items()}

    def run(self) -> dict:
        cfg = self.cfg
        ext, ref_stats = self.extractor_and_ref()
        results = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()
                              if k != "settings"},
                   "settings": [vars(s) for s in cfg.settings], "teacher_digest": self.teacher_digest,
                   "protocol": {"extractor": ext.name, "extractor_digest": ext.digest, "ref": ref_stats["path"],
                                "ref_sha256": ref_stats["sha256"], "ref_n": ref_stats["n"], "data": self.data,
                                "eval_seeds": f"{self.eval_seeds[0]}-{self.eval_seeds[-1]}",
                                "weights": "raw (no EMA)",
                                "agreement": "RMSE to the teacher reference (teacher solver on the refined grid)"},
                   "nfe": {}}
        for nfe in cfg.nfes:
            ref_images = self.reference_images(nfe)
            entry = {"teacher": self.teacher_rows(nfe, ref_images, ext, ref_stats), "runs": {}}
            steps_total = cfg.trajectories // cfg.batch
            for s in cfg.settings:
                per_seed = {}
                for seed in range(cfg.seeds):
                    d = self.train(nfe, s, seed)
                    per_seed[seed] = {"dir": str(d), "evals": self.evaluate_run(d, ref_images, ext, ref_stats)}
                entry["runs"][s.name] = per_seed
            entry["steps_total"] = steps_total
            results["nfe"][str(nfe)] = entry
        atomic_write_text(self.out / "results.json", json.dumps(results, indent=1, default=str))
        from .report import write_report
        write_report(self, results)
        return results


def compare(cfg: CompareConfig) -> dict:
    return Comparison(cfg).run()

