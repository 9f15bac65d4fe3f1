"""What a `bdense tune` study is: its options, checked before anything is made (TuneConfig), the final check it
ends with (the comparison and its settings), and the plan `tune --dry-run` prints. bdense/studies/tune.py runs it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..defaults import fill
from ..distill.sfd.targets import DEFAULT_TARGETS, DEFAULT_WEIGHTS
from ..distill.weights import parse_weights
from ..errors import BdenseError
from ..seeds import SeedBlock
from .compare import CompareConfig, Setting

SCHEDULED = "decay:cosine:0"  # the schedule every final check includes


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


def check_disjoint(tune: list[int], evaluation: list[int], first_train: int, n_train: int) -> None:
    """Tuning seeds must be neither training trajectory seeds (first_train.. +n_train) nor evaluation seeds."""
    if set(tune) & set(evaluation) or (max(tune) >= first_train and min(tune) < first_train + n_train):
        raise BdenseError("tuning seeds overlap the training or evaluation seeds; lower --eval-seeds/--trajectories")


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
