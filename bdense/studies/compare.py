"""`bdense compare`: baseline (K = 1) against B-DENSE settings, same teacher, same seeds, on any host.

Every run, cache and evaluation lands under OUT and is reused when it exists, so a long comparison can be
stopped and continued. Quality is measured on held-out evaluation seeds (never used for training) at several
points of training and at several student step counts; what is trained and what the students are compared with
is the host's business (bdense/hosts: SFD, progressive distillation); the report is written by eval/report.py.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..defaults import fill
from ..distill.sfd.targets import check_mode
from ..distill.weights import parse_weights
from ..errors import BdenseError
from ..hosts import host_class
from ..hosts.common import check_reusable, read_json  # noqa: F401 (check_reusable: part of this module's API)
from ..io import atomic_write_text, file_digest, lock_dir
from ..models.checkpoint import load_model, load_snapshot
from ..models.denoisers import HEAD_MODES
from ..options import unused_options
from ..sampling.recipe import Recipe
from ..sampling.sample import generate
from .protocol import check_folder, differs, measured, read_measured, refuse, write_measured
from .progress import Progress
from ..seeds import EVAL_OFFSET, SeedBlock, format_seeds

EVAL_SEED_BASE = EVAL_OFFSET  # block 0's evaluation noise seeds: far from every training pool (bdense/seeds.py)


SETTING_KEYS = {"targets": str, "dropout": float, "dense": int, "heads": str}  # name:K[:WEIGHTS][:key=value...]


@dataclass(frozen=True)
class Setting:
    name: str
    branches: int
    weights: str | None = None  # None: the distiller's default
    targets: str | None = None  # None: the distiller's default (bdense/distill/sfd/targets.py)
    dropout: float | None = None
    dense: int | None = None  # dense_intervals: intermediate branches in the first N trained intervals only
    heads: str | None = None  # branch_heads: shared | block (bdense/models/denoisers.py)

    @classmethod
    def parse(cls, spec: str) -> "Setting":
        """'name:K[:WEIGHTS][:targets=MODE][:dropout=P][:dense=N][:heads=block]' with any branch-weight spec (bdense/distill/weights.py).

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
        if setting.heads is not None and setting.heads not in HEAD_MODES:
            raise BdenseError(f"setting '{spec}': heads must be {' or '.join(HEAD_MODES)}")
        if setting.dropout is not None and not 0 <= setting.dropout < 1:
            raise BdenseError(f"setting '{spec}': dropout must be in [0, 1)")
        return setting

    def distill_options(self) -> dict:
        """The distill_sfd keywords this setting fixes (unset ones keep the distiller's defaults)."""
        kw = {"branches": self.branches, "branch_weights": self.weights}
        kw.update({k: v for k, v in (("branch_targets", self.targets), ("dropout", self.dropout),
                                     ("dense_intervals", self.dense), ("branch_heads", self.heads))
                   if v is not None})
        return kw


def parse_setting(spec: str):
    """A --setting string: an SFD-v setting if it names an NFE range (bdense/studies/sfdv.py), else a per-NFE one."""
    from .sfdv import SFDvSetting, is_sfdv_setting
    return SFDvSetting.parse(spec) if is_sfdv_setting(spec) else Setting.parse(spec)


@dataclass
class CompareConfig:
    teacher: str
    out: str
    nfes: tuple = (2, 3)  # sfd: student NFEs
    settings: tuple = (Setting("baseline", 1), Setting("bdense", 4))
    seeds: int = 3
    trajectories: int | None = None  # sfd: the budget of a run (None: the studied one, bdense/defaults.py)
    batch: int | None = None
    lr: float | None = None
    eval_points: tuple = (0.1, 0.25, 0.5, 1.0)  # fractions of training (pd: of every round)
    eval_seeds: int = 1000
    data: str | None = None
    features: str | None = None
    teacher_solver: str = "dpmpp_3m"
    teacher_order_rule: str = "sfd"
    teacher_threshold: str = "auto"  # sfd: dynamic for a dpmpp teacher (SFD's), bdense/distill/sfd/plan.py
    teacher_history: str = "auto"  # sfd: afs for a dpmpp teacher (SFD's)
    pool: str = "shared"  # shared: seeds reorder one trajectory pool; fresh: seed s trains on its own pool
    device: str | None = None
    progress: bool = True
    feature_steps: int = 1000  # steps of the domain feature net trained into OUT when --features is not given
    method: str = "sfd"  # the host: sfd | pd (bdense/hosts)
    start_steps: int = 64  # pd: teacher DDIM steps of round 1 (and of the rmse reference)
    end_steps: int = 8  # pd: student steps after the last round
    round_iters: int | None = None  # pd: iterations per round (the budget)
    last_step_target: str = "x-pred"  # pd, see bdense/distill/pd/task.py
    weight_span: str = "round"  # pd
    eval_clip_denoised: bool = True  # pd: students and teacher references sample with x-hat clipped every step
    student_param: str = "auto"  # pd: the student's parameterization (bdense/distill/pd/run.py)
    seed_block: int = 0  # where training trajectories, training and evaluation seeds come from (bdense/seeds.py)
    only_seeds: tuple | None = None  # a shard: these of the --seeds training seeds (0-based), the rest run elsewhere
    move_stale: bool = False  # a run made with other options is renamed aside and trained anew (else: refused)

    def __post_init__(self):
        """The whole grid is checked here, before a cache, baseline or run is made: no late failures."""
        from ..options import FracList, IntList
        self.__dict__.update(fill(self.method, vars(self)))
        self.nfes = IntList(1, 8)("--nfe", ",".join(str(n) for n in self.nfes))
        points = FracList()("--eval-points", ",".join(repr(float(p)) for p in self.eval_points))
        self.eval_points = tuple(sorted(set(points) | {1.0}))  # the report's verdicts need the end of training
        if not self.settings or not isinstance(self.settings[0], Setting) or self.settings[0].branches != 1:
            raise BdenseError("the first --setting must be the per-NFE baseline with K = 1 (e.g. baseline:1)")
        if self.method != "sfd" and not all(isinstance(s, Setting) for s in self.settings):
            raise BdenseError(f"SFD-v settings (an NFE range) need --method sfd, not {self.method}")
        if len({s.name for s in self.settings}) != len(self.settings):
            raise BdenseError("setting names must be unique")
        for s in self.settings:
            if not s.name or "/" in s.name or s.name in (".", ".."):
                raise BdenseError(f"setting name '{s.name}' cannot be a directory name; use letters, digits, - or _")
        for name, v, lo in (("--seeds", self.seeds, 1), ("--eval-seeds", self.eval_seeds, 2), ("--batch", self.batch, 1)):
            if not isinstance(v, int) or v < lo:
                raise BdenseError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            raise BdenseError(f"--lr must be a finite number in (0, 1], got {self.lr!r}")
        host_class(self.method).check_config(self)
        pool = self.trajectories * (self.seeds if self.pool == "fresh" else 1) if self.method == "sfd" else 0
        SeedBlock(self.seed_block).check(runs=self.seeds, trajectories=pool, evals=self.eval_seeds)
        if self.only_seeds is not None:
            self.only_seeds = tuple(sorted(self.only_seeds))
            if not self.only_seeds or any(not 0 <= i < self.seeds for i in self.only_seeds):
                raise BdenseError(f"--only-seeds {','.join(map(str, self.only_seeds))}: each must be a training seed "
                                  f"index from 0 to {self.seeds - 1} (--seeds {self.seeds})")

    def run_seeds(self) -> list[int]:
        """The training seeds this invocation trains: the block's first --seeds, or the --only-seeds of them. A seed's
        run (its pool with --pool fresh, init, data order) is the same whichever invocation trains it."""
        seeds = SeedBlock(self.seed_block).run_seeds(self.seeds)
        return seeds if self.only_seeds is None else [seeds[i] for i in self.only_seeds]

    def describe_grid(self) -> str:
        """What a run of this comparison would train and measure (compare --dry-run)."""
        block = SeedBlock(self.seed_block)
        runs, evals = self.run_seeds(), block.eval_seeds(self.eval_seeds)
        points = (f"NFE {','.join(map(str, self.nfes))}" if self.method == "sfd" else
                  f"rounds {self.start_steps} -> {self.end_steps} steps, {self.round_iters} iterations each")
        pools = "" if self.method != "sfd" else (
            f"; trajectories: {self.trajectories} per run from noise seed "
            + (f"{block.first_trajectory(runs[0], self.trajectories, True)} (one pool per seed, fresh)"
               if self.pool == "fresh" else f"{block.base} (one shared pool)"))
        return "\n".join([
            f"compare --method {self.method}: teacher {self.teacher}"
            + ("" if Path(self.teacher).exists() else " (not there yet)") + f", out {self.out}", f"points: {points}",
            "settings: " + ", ".join(f"{s.name} (K={s.branches})" for s in self.settings),
            f"seed block {block.index}: training seeds {format_seeds(runs)}, evaluation seeds {evals[0]}-{evals[-1]}"
            + pools, f"runs: {len(self.settings) * len(runs) * (len(self.nfes) if self.method == 'sfd' else 1)}"])


def part_name(results: dict) -> str:
    """The file of one invocation's results in OUT/parts: the same invocation run again replaces its own."""
    what = {k: v for k, v in results["config"].items() if k not in ("out", "progress", "device", "move_stale")}
    digest = hashlib.sha256(json.dumps([what, results["settings"]], sort_keys=True, default=str).encode())
    return f"results-{digest.hexdigest()[:16]}.json"


def write_part(out: Path, results: dict) -> None:
    (out / PARTS).mkdir(exist_ok=True)
    atomic_write_text(out / PARTS / part_name(results), json.dumps(results, indent=1, default=str))


PARTS = "parts"  # OUT/parts/: every invocation's results, for compare --report-only (bdense/studies/union.py)
BLOCK_FILE = "seed-block.json"  # OUT of a study in a seed block other than 0 (absent: block 0, as before blocks)


def check_block(out: Path, block: SeedBlock) -> None:
    """OUT's references and runs belong to one seed block: refuse to mix another block into them."""
    made = read_json(out / BLOCK_FILE).get("seed_block")
    if made is None and ((out / "refs").exists() or (out / "runs").exists()):
        made = 0  # made before seed blocks existed, or in block 0
    if made is not None and made != block.index:
        raise BdenseError(f"{out} holds a study in seed block {made}; use --seed-block {made} or another --out")


class Comparison:
    """The host-independent study: shared assets, measuring, the grid of (point, setting, seed), results."""

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
            from ..metrics.features import load_extractor
            ext = load_extractor("domain", cfg.features)
            a = ext.config["arch"]
            if (a["channels"], a["resolution"]) != (self.teacher.channels, self.teacher.resolution):
                raise BdenseError(f"--features {cfg.features} was trained on {a['channels']}x{a['resolution']}px "
                                  f"images but the teacher makes {self.teacher.channels}x{self.teacher.resolution}px; "
                                  f"train one with bdense train-features --resolution {self.teacher.resolution}")
        self.block = SeedBlock(cfg.seed_block)
        self.eval_seeds = self.block.eval_seeds(cfg.eval_seeds)
        self.host = host_class(cfg.method)(self)
        check_block(self.out, self.block)
        self.out.mkdir(parents=True, exist_ok=True)
        lock_dir(self.out)  # one process per comparison folder (bdense/io.py)
        self.protocol = None  # what every number under OUT is measured with: set in run() (bdense/studies/protocol.py)
        if self.block.index:
            atomic_write_text(self.out / BLOCK_FILE, json.dumps({"seed_block": self.block.index}))

    # -- shared assets ---------------------------------------------------------------
    def extractor_and_ref(self):
        from ..metrics.features import load_extractor, train_domain_classifier
        from ..metrics.fid import check_informative, feature_stats, load_stats, save_stats
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
            stats = feature_stats(ext, images.split(500))
            check_informative(stats, ext, self.data, "train one whose features vary over these images "
                                                     "(bdense train-features: more --steps or another --seed) and "
                                                     "pass it as --features PATH")
            save_stats(ref_path, stats, ext, data=self.data)
        ref = load_stats(ref_path)
        want = {"extractor_digest": ext.digest, "data": self.data}  # reused statistics carry what made them
        made = {k: ref["info"].get(k) for k in want}
        refuse(ref_path, differs(made, want), made, want,
               "rerun with the --features and --data it was made with, or choose a new --out")
        return ext, ref

    # -- measuring ---------------------------------------------------------------------
    def measure_images(self, batches, refs: dict, ext, ref_stats) -> dict:
        """FID of the images and their agreement with every reference set: rmse/psnr for 'rmse', the RMSE alone
        under its own name for any other (e.g. rmse2n)."""
        from ..metrics.agreement import image_agreement
        from ..metrics.fid import RunningStats, frechet_distance
        stats, pairs, start = RunningStats(), {k: [] for k in refs}, 0
        for im in batches:
            stats.update(ext(im))
            for k, ref in refs.items():
                pairs[k].append((im, ref[start:start + len(im)]))
            start += len(im)
        out = {}
        for k in refs:
            agree = image_agreement(pairs[k])
            out.update({"rmse": agree["rmse"], "psnr": agree["psnr"]} if k == "rmse" else {k: agree["rmse"]})
        out["fid"] = frechet_distance(stats.mu, stats.sigma, ref_stats["mu"], ref_stats["sigma"])
        return out

    def measure(self, model, recipe: Recipe, refs: dict, ext, ref_stats) -> dict:
        batches = (im for _, im, _ in generate(model, self.eval_seeds, recipe, batch_size=500, device=self.device))
        return self.measure_images(batches, refs, ext, ref_stats)

    def teacher_rows(self, point: int, refs: dict, ext, ref_stats) -> dict:
        path = self.out / "refs" / "teacher-evals.json"
        done = read_measured(path, self.protocol)
        out = {}
        for name, what in self.host.teacher_rows(point).items():
            key = f"{self.host.refs_key(point)}/{name}"
            if key not in done:
                if isinstance(what, str):  # the reference images themselves
                    done[key] = self.measure_images(refs[what].split(500), refs, ext, ref_stats)
                else:
                    done[key] = self.measure(self.teacher, what, refs, ext, ref_stats)
                write_measured(path, done, self.protocol)
            out[name] = done[key]
        return out

    def evaluate_run(self, d: Path, point: int, refs: dict, ext, ref_stats) -> dict:
        """{step within the point: metrics} of every snapshot, each measured once (OUT/.../evals.json)."""
        path = d / "evals.json"
        done = read_measured(path, self.protocol)
        snaps = self.host.snapshots(d, point)
        if any(key not in done for key, _, _ in snaps):
            student, recipe = self.host.student(d, point)
            for key, _, p in snaps:
                if key not in done:
                    load_snapshot(student, p, "delete it and the run's evals.json to train that run again")
                    done[key] = self.measure(student.eval(), recipe, refs, ext, ref_stats)
                    write_measured(path, done, self.protocol)
        return {step: done[key] for key, step, _ in snaps}

    # -- the grid of runs ------------------------------------------------------------------
    def run(self) -> dict:
        cfg, host = self.cfg, self.host
        ext, ref_stats = self.extractor_and_ref()
        about = host.describe()
        unused = set(unused_options("compare", vars(cfg)))  # e.g. --pool of a pd comparison: not recorded as used
        results = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()
                              if k != "settings" and k not in unused},
                   "settings": [vars(s) for s in cfg.settings], "teacher_digest": self.teacher_digest,
                   "host": dict(about, method=host.method, point_name=host.point_name, grid_key=host.grid_key),
                   "protocol": {"extractor": ext.name, "extractor_digest": ext.digest, "ref": ref_stats["path"],
                                "ref_sha256": ref_stats["sha256"], "ref_n": ref_stats["n"], "data": self.data,
                                "eval_seeds": f"{self.eval_seeds[0]}-{self.eval_seeds[-1]}",
                                "seed_block": self.block.index,
                                "weights": "raw (no EMA)", "agreement": about["agreement"]},
                   host.grid_key: {}}
        self.protocol = measured(results["protocol"])
        check_folder(self.out, self.protocol)
        progress = Progress(self.out / "log.txt", len(host.points()) * len(cfg.settings) * len(cfg.run_seeds()),
                            cfg.progress)
        for point in host.points():
            refs = host.references(point)
            entry = {"teacher": self.teacher_rows(point, refs, ext, ref_stats), "start": host.start_row(point),
                     "runs": {}}
            for s in cfg.settings:
                per_seed = {}
                for seed in cfg.run_seeds():
                    t0 = progress.start(f"{host.point_name} {point}, {s.name} (K={s.branches}), training seed {seed}")
                    d = host.train(point, s, seed)
                    per_seed[seed] = {"dir": str(d), "evals": self.evaluate_run(d, point, refs, ext, ref_stats)}
                    progress.finish(t0)
                entry["runs"][s.name] = per_seed
            entry["steps_total"] = host.steps_total(point)
            results[host.grid_key][str(point)] = entry
        atomic_write_text(self.out / "results.json", json.dumps(results, indent=1, default=str))
        write_part(self.out, results)
        from .report import write_report
        write_report(self, results)
        return results


def compare(cfg: CompareConfig) -> dict:
    return Comparison(cfg).run()
