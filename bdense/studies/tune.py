"""`bdense tune`: search the B-DENSE branch weights w_k (constant or scheduled) with Optuna, then check the winner.

Why it exists: the paper tuned w_k with Optuna (CIFAR-10, NFE 2), never published them, and carried to another
data set they hurt; so finding weights is a feature here, and its cost is reported next to its gain. Every trial
is a short SFD run from ONE shared teacher-trajectory cache (same trajectories, same order), or with --method pd a
PD run over every round with --trial-round-iters iterations each (scored at --end-steps), scored on TUNING
seeds (disjoint from the training trajectories and from the held-out evaluation seeds), reported at snapshot
points and pruned by the median rule. Each trial is a weight spec string (bdense/distill/weights.py), so the
winner goes as-is to `distill --branch-weights` and `compare --setting`. The winner, uniform K, a schedule and
the baseline are then re-trained with the full budget on several seeds by `compare()` and judged on the
evaluation seeds only. The study lives in OUT/optuna.db under a fixed name: run again to continue it.
What differs between hosts (the trial's run, its student and recipe, references, cost) is asked of the host
(bdense/hosts, the tune_* methods); the search, pruning, final check and report are shared.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..defaults import fill
from ..distill.pd.run import distill_pd
from ..distill.sfd.run import distill_sfd
from ..distill.sfd.targets import DEFAULT_TARGETS, DEFAULT_WEIGHTS, check_mode
from ..distill.weights import parse_weights
from ..errors import BdenseError, Interrupted
from ..io import atomic_write_text, check_out_dir, lock_dir
from ..seeds import SeedBlock
from .compare import CompareConfig, Comparison, Setting, compare
from .protocol import differs
from .progress import Progress
from .report import grid, seed_values
from ..metrics.stats import paired_verdict, t_interval

STUDY = "bdense-tune"
SCHEDULED = "decay:cosine:0"


@dataclass
class TuneConfig:
    teacher: str
    out: str
    nfe: int = 2
    branches: int | None = None  # K: default 4 (sfd), 2 (pd)
    objective: str = "rmse"  # rmse | fid | combo:A
    trials: int = 30  # total wanted in the study
    trial_trajectories: int | None = None  # default: trajectories (trials at the full budget)
    trajectories: int | None = None  # the full budget of the final runs (and the size of the shared cache)
    batch: int | None = None  # None here: the studied defaults (bdense/defaults.py)
    lr: float | None = None
    tune_seeds: int = 500
    report_points: tuple = (0.25, 0.5, 0.75, 1.0)
    jobs: int = 1
    seed: int = 0
    final: bool = True
    final_seeds: int = 3
    final_nfes: tuple | None = None  # default (nfe,)
    eval_seeds: int = 1000
    eval_points: tuple = (0.25, 0.5, 1.0)
    apply: str | None = None  # a spec found elsewhere: no search, only the final check
    data: str | None = None
    features: str | None = None
    teacher_solver: str = "dpmpp_3m"
    branch_targets: str = DEFAULT_TARGETS  # of every trial and of the final K > 1 settings
    branch_heads: str = "shared"  # sfd: of every trial and of the final K > 1 settings (bdense/models/denoisers.py)
    device: str | None = None
    progress: bool = True
    method: str = "sfd"  # the host: sfd | pd; pd's knobs below mean what they mean for `compare --method pd`
    start_steps: int = 64
    end_steps: int = 8
    round_iters: int | None = None  # pd: the final runs' iterations per round
    trial_round_iters: int | None = None  # pd: a trial's iterations per round (default: round_iters // 4)
    last_step_target: str = "x-pred"
    weight_span: str = "round"
    eval_clip_denoised: bool = True
    student_param: str = "auto"
    seed_block: int = 0  # the final runs' and the search's seeds and trajectories (bdense/seeds.py)

    def __post_init__(self):
        """Everything a study could trip over later is checked here, before any cache or trial is made."""
        from ..options import FracList, Int
        if self.method not in ("sfd", "pd"):
            raise BdenseError(f"unknown --method '{self.method}'; use sfd or pd")
        self.__dict__.update(fill(self.method, vars(self)))
        if self.branches is None:
            self.branches = 2 if self.method == "pd" else 4
        if self.method == "pd":
            self._check_pd()
        from ..models.denoisers import check_heads
        check_heads(self.branch_heads)
        Int(1, 8)("--nfe", self.nfe)
        Int(2, 16)("--branches", self.branches)
        Int(1, 10000)("--trials", self.trials)
        Int(1, 64)("--jobs", self.jobs)
        Int(0, 2**32 - 1 - 10000)("--seed", self.seed)
        Int(1, 100)("--final-seeds", self.final_seeds)
        self.report_points = FracList()("--report-points", ",".join(repr(float(p)) for p in self.report_points))
        parse_objective(self.objective)
        if self.apply:
            parse_weights(self.apply, self.branches)
        if self.method == "sfd" and self.trial_trajectories < self.batch:
            raise BdenseError(f"--trial-trajectories {self.trial_trajectories} is smaller than one --batch "
                              f"({self.batch})")

    def _check_pd(self) -> None:
        from ..distill.pd.plan import PDPlan
        if self.trial_round_iters is None:
            self.trial_round_iters = max(1, self.round_iters // 4)
        if self.branch_heads != "shared":
            raise BdenseError("--branch-heads is for --method sfd; a PD student has one shared head, drop it")
        if self.branches != 2:
            raise BdenseError(f"tune --method pd searches the weights of K = 2 (midpoint and endpoint), got --branches "
                              f"{self.branches}; drop --branches")
        if self.final_nfes is not None:
            raise BdenseError("--final-nfe is for --method sfd; a pd final check reports every round of "
                              "--start-steps -> --end-steps")
        if self.trial_round_iters > self.round_iters:
            raise BdenseError(f"--trial-round-iters {self.trial_round_iters} exceeds --round-iters {self.round_iters} "
                              f"(the final runs' budget)")
        PDPlan(self.start_steps, self.end_steps, 2, self.trial_round_iters, last_step_target=self.last_step_target,
               weight_span=self.weight_span)


def _stop():
    raise KeyboardInterrupt  # the trainer caught Ctrl-C/SIGTERM and stopped early: stop the study, too


def check_disjoint(tune: list[int], evaluation: list[int], first_train: int, n_train: int) -> None:
    """Tuning seeds must be neither training trajectory seeds (first_train.. +n_train) nor evaluation seeds."""
    if set(tune) & set(evaluation) or (max(tune) >= first_train and min(tune) < first_train + n_train):
        raise BdenseError("tuning seeds overlap the training or evaluation seeds; lower --eval-seeds/--trajectories")


def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}".rstrip("0").rstrip(".") or "0"  # fixed point: no exponent, '-' stays a separator


def suggest_spec(trial, k: int) -> str:
    """One point of the search space, written as a weight spec."""
    family = trial.suggest_categorical("family", ["end", "decay", "free"])
    if family == "end":
        a = trial.suggest_float("end_a", 0.1, 0.99)
        return f"end:{_num(a)}:{trial.suggest_categorical('end_rule', ['uniform', 'linear'])}"
    if family == "decay":
        shape = trial.suggest_categorical("decay_shape", ["linear", "cosine"])
        floor = trial.suggest_float("decay_floor", 0.0, 1.0)
        s = round(trial.suggest_float("decay_start", 0.0, 0.8), 2)
        e = round(s + (1 - s) * trial.suggest_float("decay_span", 0.1, 1.0), 2)
        return f"decay:{shape}:{_num(floor)}:{_num(s, 2)}-{_num(e, 2)}"
    return ",".join(_num(trial.suggest_float(f"w{i}", 0.05, 1.0, log=True)) for i in range(1, k)) + ",1"


def uniform_params(k: int) -> dict:
    return {"family": "free", **{f"w{i}": 1.0 for i in range(1, k)}}


def parse_objective(text: str) -> float:
    """The weight of the RMSE term: rmse -> 1, fid -> 0, combo:A -> A."""
    if text in ("rmse", "fid"):
        return 1.0 if text == "rmse" else 0.0
    try:
        head, a = text.split(":")
        if head == "combo" and 0 <= float(a) <= 1:
            return float(a)
    except ValueError:
        pass
    raise BdenseError(f"cannot read --objective '{text}'; use rmse, fid or combo:A with 0 <= A <= 1")


class Tuner:
    def __init__(self, cfg: TuneConfig):
        if cfg.branches < 2:
            raise BdenseError("tuning branch weights needs --branches >= 2")
        if cfg.tune_seeds < 2:
            raise BdenseError("--tune-seeds must be at least 2 (FID needs a covariance)")
        check_mode(cfg.branch_targets)
        if cfg.method == "sfd" and cfg.trial_trajectories > cfg.trajectories:
            raise BdenseError("--trial-trajectories exceeds --trajectories (the shared cache holds --trajectories)")
        self.cfg, self.out, self.alpha = cfg, Path(cfg.out), parse_objective(cfg.objective)
        check_out_dir("--out", self.out, [cfg.teacher, cfg.features])
        self.points = tuple(sorted(set(cfg.report_points) | {1.0}))
        self.cmp = Comparison(final_config(cfg))  # owns the shared cache, feature net and reference stats (OUT/final)
        lock_dir(self.out)  # one process per study folder (bdense/io.py)
        self.host = self.cmp.host
        self.seeds = self.cmp.block.tune_seeds(cfg.tune_seeds)
        self.cmp.block.check(runs=cfg.final_seeds, trajectories=cfg.trajectories, evals=cfg.eval_seeds,
                             tunes=cfg.tune_seeds)
        check_disjoint(self.seeds, self.cmp.eval_seeds, self.cmp.block.base, cfg.trajectories)
        n_cuda = torch.cuda.device_count() if cfg.device in (None, "cuda") and self.cmp.device == "cuda" else 0
        self.devices = [f"cuda:{i}" for i in range(n_cuda)] if n_cuda > 1 else [self.cmp.device]
        self.jobs = max(1, min(cfg.jobs, len(self.devices)))
        self.notes = [] if self.jobs == cfg.jobs else [
            f"--jobs {cfg.jobs} asked, {self.jobs} used: parallel trials need several CUDA devices (one per trial)"]

    # -- one short run, measured on the tuning seeds --------------------------------------------
    def setup(self) -> None:
        self.t0 = time.time()  # the search's wall time includes making the cache and references
        self.ext, self.ref_stats = self.cmp.extractor_and_ref()  # the cheap, refusable part first
        self.refs = self.host.tune_prepare(self.cfg, self.seeds, self.out / "search")

    def measure(self, model, device, recipe) -> dict:
        from ..sampling.sample import generate
        from ..metrics.agreement import image_agreement
        from ..metrics.fid import RunningStats, frechet_distance
        stats, pairs, i = RunningStats(), [], 0
        for _, im, _ in generate(model, self.seeds, recipe, 500, device):
            stats.update(self.ext(im))
            pairs.append((im, self.refs[i:i + len(im)]))
            i += len(im)
        return {"rmse": image_agreement(pairs)["rmse"],
                "fid": frechet_distance(stats.mu, stats.sigma, self.ref_stats["mu"], self.ref_stats["sigma"])}

    def value(self, m: dict, base: dict | None) -> float:
        if self.alpha in (0.0, 1.0):
            return m["rmse"] if self.alpha else m["fid"]
        return self.alpha * m["rmse"] / base["rmse"] + (1 - self.alpha) * m["fid"] / base["fid"]

    def short_run(self, d: Path, k: int, spec: str | None, device: str, on_measure) -> int:
        """One trial's run (the host's: SFD on the first --trial-trajectories of the cache, PD over every round);
        on_measure(step, metrics) at each report point."""
        if device.startswith("cuda"):
            torch.cuda.set_device(device)  # accelerate trains on the thread's current CUDA device
        student = self.host.tune_student(self.cfg, k).to(device).eval()

        def on_snapshot(step, weights):
            student.load_state_dict(weights)
            on_measure(step, self.measure(student, device, self.host.tune_recipe(self.cfg, step)))
        train = distill_sfd if self.host.method == "sfd" else distill_pd  # looked up here: tests replace them
        try:
            train(self.cfg.teacher, str(d), on_snapshot=on_snapshot,
                  **self.host.tune_run_options(self.cfg, k, spec, device, self.points))["completed"] or _stop()
        finally:  # keep logs and metrics, drop the weights
            for sub in ("snapshots", "checkpoints"):
                shutil.rmtree(d / sub, ignore_errors=True)
            (d / "model.safetensors").unlink(missing_ok=True)
        return self.host.tune_iterations(self.cfg)

    def objective(self, trial, base: dict) -> float:
        import optuna
        spec = suggest_spec(trial, self.cfg.branches)
        trial.set_user_attr("spec", spec)
        steps, last = self.host.tune_iterations(self.cfg), {}

        def on_measure(step, m):
            last.update(m, value=self.value(m, base))
            for key, v in dict(last, iterations=step, measurements=trial.user_attrs.get("measurements", 0) + 1).items():
                trial.set_user_attr(key, v)
            if step < steps:
                trial.report(last["value"], step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"{spec}: {last['value']:.4g} at step {step} is worse than the median")
        t0 = self.progress.start(f"{spec} (study trial {trial.number})", unit="trial")
        try:
            self.short_run(self.out / "trials" / f"{trial.number:05d}", self.cfg.branches, spec,
                           self.devices[trial.number % len(self.devices)], on_measure)
        except (KeyboardInterrupt, Interrupted) as e:
            trial.set_user_attr("interrupted", True)  # failed now, redone by the next `bdense tune`
            if isinstance(e, Interrupted):  # a BaseException optuna does not catch: it would leave the trial RUNNING
                trial.study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            raise
        finally:
            self.progress.finish(t0)
        return last["value"]

    # -- the study ----------------------------------------------------------------------------------
    def open_study(self):
        """OUT/optuna.db, opened (made) before any other work, so a damaged file is refused before the cache."""
        import optuna
        db = self.out / "optuna.db"
        try:
            return optuna.create_study(storage=f"sqlite:///{db.resolve()}", study_name=STUDY, direction="minimize",
                                       load_if_exists=True, pruner=optuna.pruners.MedianPruner(n_startup_trials=4))
        except Exception as e:  # sqlalchemy/optuna errors of a damaged file: no common base class to name
            raise BdenseError(f"{db} cannot be opened as an Optuna study ({type(e).__name__}: the file is damaged or "
                              f"not a study); move it away to start the search again, or choose another "
                              f"--out") from None

    def search(self) -> dict:
        import optuna
        from optuna.trial import TrialState
        cfg, t0 = self.cfg, self.t0
        study = self.open_study()
        # trial values made with one feature net are not comparable with another's (bdense/studies/protocol.py)
        setup = dict(self.host.tune_setup(cfg, self.points), extractor_digest=self.ext.digest)
        if cfg.seed_block:  # block 0 studies made before blocks existed continue unchanged
            setup["seed_block"] = cfg.seed_block
        if differs(study.user_attrs.get("setup", setup), setup):
            raise BdenseError(f"{self.out / 'optuna.db'} holds a study of another setup "
                              f"({study.user_attrs['setup']}); use another --out or the same options")
        study.set_user_attr("setup", setup)
        base = study.user_attrs.get("baseline")
        if base is None:  # K = 1 on the trial budget, once: the normaliser of combo:A and a reference point
            out = {}
            t = time.time()
            steps = self.short_run(self.out / "search" / "baseline", 1, None, self.devices[0],
                                   lambda step, m: out.update(m))
            base = dict(out, iterations=steps, seconds=time.time() - t)
            study.set_user_attr("baseline", base)
        retried = {t.user_attrs.get("retry_of") for t in study.trials}
        for t in study.get_trials(deepcopy=False):  # left by a killed or interrupted run: redo them, once
            if t.number not in retried and (t.state == TrialState.RUNNING or t.user_attrs.get("interrupted")):
                if t.state == TrialState.RUNNING:
                    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        if not study.trials:
            study.enqueue_trial(uniform_params(cfg.branches))  # trial 0 = uniform: best <= uniform by construction
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # seeded by the trial count so a continued study does not replay the first run's random start
            study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(study.trials), multivariate=True,
                                                       group=True, n_startup_trials=min(10, max(3, cfg.trials // 4)))
            if cfg.trials > done:
                self.progress = Progress(self.out / "log.txt", cfg.trials - done, cfg.progress)
                study.optimize(lambda tr: self.objective(tr, base), n_trials=cfg.trials - done, n_jobs=self.jobs,
                               catch=(BdenseError,))
        study.set_user_attr("search_wall_s", study.user_attrs.get("search_wall_s", 0.0) + time.time() - t0)
        return self.summary(study, base)

    def summary(self, study, base: dict) -> dict:
        from optuna.trial import TrialState
        trials = study.get_trials(deepcopy=False)
        by = {s: [t for t in trials if t.state == s] for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        if not by[TrialState.COMPLETE]:
            raise BdenseError("no trial completed; see OUT/trials/*/log.txt")
        best = study.best_trial
        uniform = next((t for t in by[TrialState.COMPLETE] if t.params == uniform_params(self.cfg.branches)), None)
        iters = sum(t.user_attrs.get("iterations", 0) for t in trials) + base["iterations"]
        total = self.host.tune_iterations(self.cfg)  # a trial's i-th measurement samples with nfe[i] steps
        nfe = [self.host.tune_recipe(self.cfg, max(1, round(f * total))).nfe for f in self.points]
        evals = sum(sum(nfe[:t.user_attrs.get("measurements", 0)]) for t in trials) + sum(nfe)
        row = lambda t: {"trial": t.number, "spec": t.user_attrs["spec"], "value": t.value,  # noqa: E731
                         "rmse": t.user_attrs.get("rmse"), "fid": t.user_attrs.get("fid")}
        return {"objective": self.cfg.objective, "best": row(best), "uniform": row(uniform) if uniform else None,
                "baseline_trial_budget": base, "top": [row(t) for t in sorted(by[TrialState.COMPLETE],
                                                                            key=lambda t: t.value)[:5]],
                "trials": {"complete": len(by[TrialState.COMPLETE]), "pruned": len(by[TrialState.PRUNED]),
                           "failed": len(by[TrialState.FAIL])},
                "cost": {**self.host.tune_cost(self.cfg, len(self.seeds), iters),
                         "student_eval_passes": evals * len(self.seeds),
                         "trial_seconds": sum((t.datetime_complete - t.datetime_start).total_seconds()
                                              for t in trials if t.datetime_complete and t.datetime_start)
                         + base["seconds"], "search_wall_s": study.user_attrs.get("search_wall_s")},
                "setup": study.user_attrs["setup"], "notes": self.notes}

    # -- the honest check ---------------------------------------------------------------------------
    def final(self, spec: str) -> dict:
        return compare(replace(self.cmp.cfg, settings=final_settings(self.cfg, spec)))

def final_config(cfg: TuneConfig) -> CompareConfig:
    """The final check's comparison (under OUT/final); its settings are set once the winner is known."""
    pd = {} if cfg.method != "pd" else dict(
        method="pd", start_steps=cfg.start_steps, end_steps=cfg.end_steps, round_iters=cfg.round_iters,
        last_step_target=cfg.last_step_target, weight_span=cfg.weight_span, eval_clip_denoised=cfg.eval_clip_denoised,
        student_param=cfg.student_param, settings=(Setting("baseline", 1), Setting("bdense", cfg.branches)))
    return CompareConfig(cfg.teacher, str(Path(cfg.out) / "final"), nfes=tuple(cfg.final_nfes or (cfg.nfe,)),
                         seeds=cfg.final_seeds, trajectories=cfg.trajectories, batch=cfg.batch, lr=cfg.lr,
                         eval_points=cfg.eval_points, eval_seeds=cfg.eval_seeds, data=cfg.data,
                         features=cfg.features, teacher_solver=cfg.teacher_solver, device=cfg.device,
                         progress=cfg.progress, seed_block=cfg.seed_block, **pd)


def final_settings(cfg: TuneConfig, spec: str | None) -> tuple:
    """K = 1, uniform, the winner `spec` (None: not known yet, as in a dry run), the cosine schedule, and for SFD
    what a user gets without --branch-weights; every K > 1 setting shares the study's targets and heads."""
    k = cfg.branches
    mode = cfg.branch_targets if cfg.method == "sfd" else None  # pd settings have no target modes
    heads = None if cfg.branch_heads == "shared" else cfg.branch_heads

    def dense(name: str, weights: str | None) -> Setting:
        return Setting(name, k, weights, mode, heads=heads)
    w = None if spec is None else parse_weights(spec, k)
    settings = [Setting("baseline", 1), dense("uniform", "uniform")]
    settings += [] if w is not None and w.kind == "constant" and set(w.base) == {1.0} else [dense("tuned", spec)]
    settings += [] if spec == SCHEDULED else [dense("scheduled", SCHEDULED)]
    if cfg.method == "sfd" and spec != DEFAULT_WEIGHTS:
        settings.append(dense("default", DEFAULT_WEIGHTS))
    return tuple(settings)


def describe_plan(cfg: TuneConfig) -> str:
    """What a run of this study would search and check (tune --dry-run): the seeds are checked, nothing is made."""
    block = SeedBlock(cfg.seed_block)
    tunes = block.tune_seeds(cfg.tune_seeds)
    block.check(runs=cfg.final_seeds, trajectories=cfg.trajectories, evals=cfg.eval_seeds, tunes=cfg.tune_seeds)
    check_disjoint(tunes, block.eval_seeds(cfg.eval_seeds), block.base, cfg.trajectories)
    trial = (f"{cfg.trial_trajectories} trajectories of one shared cache of {cfg.trajectories}, scored at NFE "
             f"{cfg.nfe}" if cfg.method == "sfd" else f"a PD run {cfg.start_steps} -> {cfg.end_steps} steps, "
             f"{cfg.trial_round_iters} iterations a round, scored at {cfg.end_steps} steps")
    search = (f"none (--apply {cfg.apply})" if cfg.apply else
              f"{cfg.trials} trials of K={cfg.branches} branch weights (trial 0: uniform), objective {cfg.objective}, "
              f"each {trial}; tuning seeds {tunes[0]}-{tunes[-1]}")
    lines = [f"tune --method {cfg.method}: teacher {cfg.teacher}"
             + ("" if Path(cfg.teacher).exists() else " (not there yet)") + f", out {cfg.out}", f"search: {search}"]
    if not cfg.final:
        return "\n".join(lines + ["final check: none (--no-final)"])
    grid = replace(final_config(cfg), settings=final_settings(cfg, cfg.apply)).describe_grid()
    tuned = f"--apply {cfg.apply}" if cfg.apply else "the search's winner"
    return "\n".join(lines + [f"final check (tuned = {tuned}):"] + ["  " + g for g in grid.splitlines()])


def _gain(results: dict, name: str, metric: str) -> list[str]:
    """Paired (same training seed) difference of `name` to uniform K at the end of training, per NFE."""
    out = []
    for nfe, e in grid(results).items():
        runs = e["runs"]
        if name in runs:
            v = paired_verdict(*[seed_values(runs[s], e["steps_total"], metric) for s in ("uniform", name)])
            out.append(f"NFE {nfe}: {name} - uniform = {v['diff_mean']:+.4g} ± {v['diff_half']:.2g} ({v['verdict']})")
    return out


def _cost_lines(c: dict, cfg: TuneConfig) -> list[str]:
    if "cache_trajectories" in c:  # sfd
        return [f"- teacher passes: {c['teacher_passes']:,} ((cache {c['cache_trajectories']:,} + tuning references "
                f"{cfg.tune_seeds}) trajectories x {c['teacher_nfe']} teacher NFE; the cache also serves the final "
                f"runs)", f"- student training passes: {c['student_train_passes']:,} (iterations x trained intervals "
                f"x batch; = {c['full_runs_equivalent']:.1f} full-budget runs)"]
    return [f"- teacher passes: {c['teacher_passes']:,} (2 DDIM steps per training image, and the "
            f"{cfg.start_steps}-step references of {cfg.tune_seeds} tuning seeds)", f"- student training passes: "
            f"{c['student_train_passes']:,} (iterations x batch; = {c['full_runs_equivalent']:.1f} full-budget runs)"]


def write_tune_report(tuner: Tuner, doc: dict | None, spec: str, results: dict | None) -> Path:
    from .report import table
    cfg, out, words = tuner.cfg, Path(tuner.cfg.out), tuner.host.tune_words(tuner.cfg)
    text = ["# bdense tune report", "", f"Teacher `{cfg.teacher}`, {words['title']}, K = {cfg.branches}, "
            f"objective `{cfg.objective}` (lower is better).", ""]
    if doc is None or "best" not in doc:
        text += [f"No search: the spec `{spec}` was given with --apply (found elsewhere); this checks whether it "
                 "carries to this teacher / data set.", ""]
    else:
        c, n = doc["cost"], doc["trials"]
        text += ["## Search", "", f"Best spec: `{spec}` (trial {doc['best']['trial']}), search value "
                 f"{doc['best']['value']:.4g}" + (f"; uniform (trial {doc['uniform']['trial']}): "
                                                   f"{doc['uniform']['value']:.4g}" if doc["uniform"] else "")
                 + f"; baseline K=1 on the trial budget: rmse {doc['baseline_trial_budget']['rmse']:.4g}, "
                 f"fid {doc['baseline_trial_budget']['fid']:.4g}.",
                 f"Measured on {cfg.tune_seeds} tuning seeds from {tuner.seeds[0]} (seed block {cfg.seed_block}; never used for training or "
                 f"for the evaluation below), {words['trial']}.",
                 *([f"Trials ran on {words['fraction']:.0%} of the final budget: a ranking of "
                    "short runs need not hold at full length (on digits the winner at 1/3 lost to uniform at the "
                    "full budget), so judge by the final check below."] if words["fraction"] < 1 else []),
                 "", "| trial | spec | value | rmse | fid |", "|---|---|---|---|---|",
                 *[f"| {r['trial']} | `{r['spec']}` | {r['value']:.4g} | {r['rmse']:.4g} | {r['fid']:.4g} |"
                   for r in doc["top"]], "", "## Tuning cost", "",
                 f"- trials: {sum(n.values())} ({n['complete']} completed, {n['pruned']} pruned, {n['failed']} failed)",
                 *_cost_lines(c, cfg),
                 f"- student evaluation passes: {c['student_eval_passes']:,}",
                 f"- time: {c['trial_seconds']:.0f} s of trials, {c['search_wall_s']:.0f} s wall for the search",
                 *[f"- note: {x}" for x in doc["notes"]], ""]
    if results is not None:
        text += ["## Final check (full budget, held-out evaluation seeds)", "",
                 "Re-trained by `bdense compare` in `final/` (its [report](final/report.md) has progress plots and "
                 "samples).", "", table(results), "Gain of the tuned weights over uniform K (paired by seed):", "",
                 *[f"- {m}: {x}" for m in ("rmse", "fid") for x in _gain(results, "tuned", m)], ""]
    text += [f"Reproduce or carry over: {words['reproduce'].replace('SPEC', spec)}.", ""]
    atomic_write_text(out / "tune_report.md", "\n".join(text))
    summary = {"spec": spec, "search": doc, "final": None if results is None else {
        nfe: {s: {m: t_interval(list(seed_values(runs, e["steps_total"], m).values()))
                  for m in ("rmse", "fid")} for s, runs in e["runs"].items()} for nfe, e in grid(results).items()}}
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=1, default=str))
    return out / "tune_report.md"


def tune(cfg: TuneConfig) -> dict:
    tuner, doc = Tuner(cfg), None
    if cfg.apply:
        parse_weights(cfg.apply, cfg.branches)
    else:
        tuner.open_study()
        tuner.setup()
        doc = tuner.search()
    spec = cfg.apply or doc["best"]["spec"]
    results = tuner.final(spec) if cfg.final else None
    write_tune_report(tuner, doc, spec, results)
    return {"spec": spec, "search": doc, "final": results}
