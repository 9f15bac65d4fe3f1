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

import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from ..distill.pd.run import distill_pd
from ..distill.sfd.plan import SFDPlan, check_branches
from ..distill.sfd.run import distill_sfd
from ..distill.sfd.targets import check_mode
from ..distill.weights import parse_weights
from ..errors import BdenseError, Interrupted
from ..io import check_out_dir, lock_dir
from .compare import Comparison, compare
from .protocol import differs
from .progress import Progress
from .tune_plan import TuneConfig, check_disjoint, final_config, final_settings, parse_objective
from .tune_report import write_tune_report

STUDY = "bdense-tune"


def _stop():
    raise KeyboardInterrupt  # the trainer caught Ctrl-C/SIGTERM and stopped early: stop the study, too



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



class Tuner:
    def __init__(self, cfg: TuneConfig):
        if cfg.branches < 2:
            raise BdenseError("tuning branch weights needs --branches >= 2")
        if cfg.tune_seeds < 2:
            raise BdenseError("--tune-seeds must be at least 2 (FID needs a covariance)")
        check_mode(cfg.branch_targets)
        if cfg.method == "sfd":  # before the study exists: else every trial fails on it, one by one
            check_branches(cfg.branches, SFDPlan.substeps)
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
