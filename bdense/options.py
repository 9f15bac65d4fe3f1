"""Every command-line option's valid values, in one place, checked at the command boundary.

A command calls `check("NAME", locals())` as its first line: every option that has a rule here is checked (and
list options are parsed) before anything is read or written, and a bad value is refused with one line naming the
flag, the valid range and the value given. None always means "the default"; 0 is a value like any other and is
accepted only where the rule allows it.

To add an option: give it a rule in RULES (by option name, for every command) or in COMMAND_RULES (for one
command, when the same name means something else there). tests/test_options.py fails for any int, float or
list option of any command that has no rule, and feeds random values to every rule through the real commands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import BdenseError
from .seeds import MAX_SEED_BLOCK, MAX_SEEDS, SEED_MAX

BIG = 10**9


def model_spec(value):
    """Option callback for every model option: a path, or the short name of a shipped teacher (`bdense teachers
    list`). Imported lazily so that `--help` and option checks stay free of torch."""
    from .models.shipped import resolve
    return resolve(value)


def _flag(name: str) -> str:
    """The option's flag: --name-with-dashes (every ruled option is named so; tests/test_options.py checks it)."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int

    def __call__(self, flag, v):
        if isinstance(v, bool) or not isinstance(v, int) or not self.lo <= v <= self.hi:
            raise BdenseError(f"{flag} must be an integer from {self.lo} to {self.hi}, got {v!r}")
        return v


@dataclass(frozen=True)
class Float:
    lo: float
    hi: float
    lo_open: bool = True  # (lo, hi] by default
    hi_open: bool = False

    def describe(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"

    def __call__(self, flag, v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > self.lo if self.lo_open else v >= self.lo) and (v < self.hi if self.hi_open else v <= self.hi)
        if not ok:
            raise BdenseError(f"{flag} must be a finite number in {self.describe()}, got {v!r}")
        return float(v)


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __call__(self, flag, v):
        if v not in self.values:
            raise BdenseError(f"unknown {flag} {v!r}; use {', '.join(self.values)}")
        return v


@dataclass(frozen=True)
class IntList:
    """'2,3' -> (2, 3): distinct integers in [lo, hi]."""
    lo: int
    hi: int
    max_len: int = 16

    def __call__(self, flag, v):
        try:
            items = tuple(int(x) for x in str(v).replace(" ", "").split(","))
        except ValueError:
            raise BdenseError(f"cannot read {flag} '{v}'; give comma-separated integers like 2,3") from None
        if not items or len(items) > self.max_len or len(set(items)) != len(items) or \
                any(not self.lo <= x <= self.hi for x in items):
            raise BdenseError(f"{flag} '{v}' must be 1 to {self.max_len} distinct integers from {self.lo} to {self.hi}")
        return items


@dataclass(frozen=True)
class FracList:
    """'0.25,0.5,1' -> (0.25, 0.5, 1.0): distinct fractions of training in (0, 1]."""
    max_len: int = 64

    def __call__(self, flag, v):
        try:
            items = tuple(float(x) for x in str(v).replace(" ", "").split(","))
        except ValueError:
            raise BdenseError(f"cannot read {flag} '{v}'; give comma-separated fractions like 0.25,0.5,1") from None
        if not items or len(items) > self.max_len or len(set(items)) != len(items) or \
                any(not (0 < x <= 1) for x in items):
            raise BdenseError(f"{flag} '{v}' must be 1 to {self.max_len} distinct fractions in (0, 1]")
        return items


@dataclass(frozen=True)
class NfeCounts(IntList):
    """'2' | '2-5' | '2,3,5' -> sorted distinct NFE in [1, 8]; several train one SFD-v student."""
    lo: int = 1
    hi: int = 8

    def __call__(self, flag, v):
        from .distill.sfd.counts import parse_counts
        return parse_counts(v)


class Seeds:
    """A seed spec like 0-999,2000 (bdense.seeds.parse_seeds): at most MAX_SEEDS seeds in 0..2^63-1."""

    def __call__(self, flag, v):
        from .seeds import parse_seeds
        return parse_seeds(v, flag=flag)


class Device:
    """cpu, cuda or cuda:N; the device must exist here, except for a --dry-run (check() skips that part), which only
    prints the plan: a GPU run can be planned on a machine without one."""

    def __call__(self, flag, v, present: bool = True):
        import re
        if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", str(v)):
            raise BdenseError(f"unknown {flag} {v!r}; use cpu, cuda or cuda:N")
        if present and v.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise BdenseError(f"{flag} {v} but CUDA is not available here; use --device cpu (or leave it out)")
            if ":" in v and int(v.split(":")[1]) >= torch.cuda.device_count():
                raise BdenseError(f"{flag} {v}: only {torch.cuda.device_count()} CUDA device(s) here")
        return v


from .defaults import fill  # noqa: E402 (torch-free)
from .distill.sfd.counts import DRAWS  # noqa: E402 (torch-free)
from .distill.sfd.targets import TARGET_MODES  # noqa: E402 (torch-free)

SOLVER = Choice(("euler", "heun", "dpmpp_2m", "dpmpp_3m"))
PRECISION = Choice(("fp32", "bf16", "fp16"))
BATCH = Int(1, 65536)
COUNT = Int(1, BIG)  # trajectories, steps, iterations

RULES = {
    "batch": BATCH, "lr": Float(0, 1), "seed": Int(0, SEED_MAX), "device": Device(), "precision": PRECISION,
    "steps": Int(1, BIG), "ema_decay": Float(0, 1, lo_open=False, hi_open=True), "resolution": Int(4, 512),
    "checkpoint_every": Int(0, BIG), "log_every": Int(1, BIG), "seeds": Seeds(), "solver": SOLVER,
    "teacher_solver": SOLVER, "nfe": Int(1, 1000), "schedule": Choice(("polynomial", "logsnr", "time-uniform")),
    "branches": Int(1, 16), "teacher_substeps": Int(1, 64), "trajectories": COUNT, "start_steps": Int(2, 65536),
    "end_steps": Int(1, 65536), "round_iters": COUNT, "count": COUNT, "shard_size": COUNT,
    "dtype": Choice(("fp32", "bf16")), "eval_points": FracList(), "eval_seeds": Int(2, MAX_SEEDS),
    "parameterization": Choice(("edm", "eps", "x", "v")), "method": Choice(("sfd", "pd")),
    "preset": Choice(("tiny", "digits", "mnist", "cifar", "ddpm-cifar10")), "format": Choice(("bdense", "diffusers")),
    "extractor": Choice(("inception", "inception-pytorch-fid", "domain")), "max": COUNT,
    "frechet": Choice(("sqrtm", "eigvals")), "teacher_nfe": Int(1, 1000), "trials": Int(1, 10000),
    "trial_trajectories": COUNT, "tune_seeds": Int(2, MAX_SEEDS), "report_points": FracList(), "jobs": Int(1, 64),
    "final_seeds": Int(1, 100), "final_nfe": IntList(1, 8), "pad": Choice(("none", "pad")),
    "branch_targets": Choice(TARGET_MODES), "dropout": Float(0, 1, lo_open=False, hi_open=True),
    "teacher_order_rule": Choice(("sfd", "tail", "dpm-solver")),
    "order_rule": Choice(("sfd", "tail", "dpm-solver")), "threshold": Choice(("dynamic", "none")),
    "teacher_threshold": Choice(("auto", "dynamic", "none")), "teacher_history": Choice(("auto", "afs", "restart")), "pool": Choice(("shared", "fresh")),
    "first_trajectory_seed": Int(0, SEED_MAX), "dense_intervals": Int(0, 8), "nfe_draw": Choice(DRAWS),
    "branch_heads": Choice(("shared", "block")),  # bdense.models.denoisers.HEAD_MODES (that module needs torch)
    "last_step_target": Choice(("x-pred", "ddim")), "weight_span": Choice(("round", "all")),
    "first_seed": Int(0, SEED_MAX), "check_seeds": Int(1, 10000), "student_param": Choice(("auto", "eps", "x", "v")),
    "trial_round_iters": COUNT, "seed_block": Int(0, MAX_SEED_BLOCK), "only_seeds": IntList(0, 99, max_len=100),
}
STUDIED_COMMANDS = ("distill", "compare", "tune")  # their training options default to bdense/defaults.py
# the same name with another meaning in one command
COMMAND_RULES = {
    ("distill", "nfe"): NfeCounts(), ("trajectories", "nfe"): NfeCounts(), ("export", "nfe"): Int(1, 8), ("tune", "nfe"): Int(1, 8),
    ("compare", "nfe"): IntList(1, 8), ("compare", "seeds"): Int(1, 100), ("tune", "branches"): Int(2, 16),
    ("tune", "seed"): Int(0, 2**32 - 1 - 10000),  # optuna's sampler takes a 32-bit seed (+ the trial count)
    ("agreement", "seeds"): Seeds(),
}


@dataclass(frozen=True)
class Uses:
    """Where an option is used: `says` names it in the refusal, `when(values)` is True for the checked values of a
    command that uses it, `elsewhere` is an argument that makes it unused (tests/test_hostile_classes.py gives
    every option of USED_BY with it and expects the refusal)."""
    says: str
    when: Callable[[dict], bool]
    elsewhere: str


def _k(v: dict) -> int:
    return v.get("branches") or (2 if v.get("method") == "pd" else 1)


SFD = Uses("--method sfd", lambda v: v.get("method", "sfd") == "sfd", "--method pd")
PD = Uses("--method pd", lambda v: v.get("method") == "pd", "--method sfd")
SFD_K = Uses("--method sfd and --branches > 1", lambda v: v.get("method", "sfd") == "sfd" and _k(v) > 1,
             "--branches 1")
K = Uses("--branches > 1", lambda v: _k(v) > 1, "--branches 1")
SFD_V = Uses("several --nfe (an SFD-v student)", lambda v: v.get("method", "sfd") == "sfd" and len(v["nfe"]) > 1,
             "--nfe 2")

# Options that only one method (or K, or setting) uses, in the commands with --method: given where unused, they are
# refused in one line instead of being ignored or recorded as if used. To add an SFD-only option: one line,
# e.g. "teacher_threshold": SFD. COMMAND_USED_BY holds the exceptions (the same name meaning another thing there).
USED_BY = {
    "nfe": SFD, "nfe_draw": SFD_V, "teacher_solver": SFD, "teacher_order_rule": SFD, "teacher_substeps": SFD,
    "first_trajectory_seed": SFD, "afs": SFD, "trajectories": SFD, "trajectory_cache": SFD, "compile_teacher": SFD,
    "dropout": SFD, "branch_targets": SFD, "branch_heads": SFD_K, "dense_intervals": SFD_K, "pool": SFD,
    "trial_trajectories": SFD, "final_nfe": SFD, "branch_weights": K,
    "start_steps": PD, "end_steps": PD, "round_iters": PD, "trial_round_iters": PD, "last_step_target": PD,
    "weight_span": PD, "eval_clip_denoised": PD, "student_param": PD, "random_flip": PD,
    "teacher_threshold": SFD, "teacher_history": SFD,
}
COMMAND_USED_BY = {("distill", "data"): PD, ("tune", "branch_heads"): SFD}
METHOD_COMMANDS = ("distill", "compare", "tune")  # the commands with --method: the tables apply to them only


def uses_for(command: str, name: str) -> Uses | None:
    if command not in METHOD_COMMANDS:
        return None
    return COMMAND_USED_BY.get((command, name), USED_BY.get(name))


def unused_options(command: str, values: dict) -> list[str]:
    """The options of `values` that the command, with these values, does not use (e.g. to leave them out of a
    record of what a run used)."""
    return [n for n in values if (u := uses_for(command, n)) is not None and not u.when(values)]


def _given() -> dict[str, str]:
    """{name: flag} of the options typed on the command line of the running click command (empty outside one: a
    library call passes what it means)."""
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context
    ctx = get_current_context(silent=True)
    if ctx is None:
        return {}
    default = (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    return {p.name: p.opts[0] for p in ctx.command.params if ctx.get_parameter_source(p.name) not in default}


def rule_for(command: str, name: str):
    return COMMAND_RULES.get((command, name), RULES.get(name))


def check(command: str, values: dict) -> dict:
    """Check every option of `command` that has a rule; return the values with lists parsed (None stays None)."""
    out = dict(values)
    for name, v in values.items():
        rule = rule_for(command, name)
        if rule is not None and v is not None:
            planned = isinstance(rule, Device) and values.get("dry_run")  # a plan needs no GPU here
            out[name] = rule(_flag(name), v, present=False) if planned else rule(_flag(name), v)
    if command in STUDIED_COMMANDS:  # options left out take the studied defaults, as the commands themselves do
        out = fill(out.get("method") or "sfd", out)
        if command == "distill" and values.get("trajectories") is None:
            out["trajectories"] = None  # per NFE: distill_sfd multiplies it by the NFE counts
    _cross_checks(command, out)
    given = _given()
    for name in sorted(set(given) & set(unused_options(command, out))):
        raise BdenseError(f"{given[name]} is used only with {uses_for(command, name).says}, not here (it would "
                          f"change nothing); drop it")
    return out


def _cross_checks(command: str, v: dict) -> None:
    """Options valid alone but not together: refused here, before any work, rather than after it."""
    from .distill.weights import parse_weights
    if command == "distill":
        k = v.get("branches") or 1
        parse_weights(v.get("branch_weights"), k)
        if v.get("method") == "sfd":
            if v["teacher_substeps"] % k:
                raise BdenseError(f"--branches {k} cannot split {v['teacher_substeps']} teacher sub-steps per interval "
                                  f"evenly; use a K that divides --teacher-substeps (or set --teacher-substeps {k})")
            if v["trajectories"] is not None and v["trajectories"] < v["batch"]:
                raise BdenseError(f"--trajectories {v['trajectories']} is smaller than one --batch ({v['batch']})")
        elif v["end_steps"] >= v["start_steps"]:
            raise BdenseError(f"--end-steps {v['end_steps']} must be below --start-steps {v['start_steps']}")
    if command == "trajectories" and v["shard_size"] % v["batch"]:
        raise BdenseError(f"--shard-size {v['shard_size']} must be a multiple of --batch {v['batch']}")
    if command in ("compare", "tune") and v["method"] == "pd" and v["end_steps"] >= v["start_steps"]:
        raise BdenseError(f"--end-steps {v['end_steps']} must be below --start-steps {v['start_steps']}")
    if command in ("tune", "compare") and v["method"] == "sfd" and v["trajectories"] < v["batch"]:
        raise BdenseError(f"--trajectories {v['trajectories']} is smaller than one --batch ({v['batch']})")
    if command == "tune" and v["method"] == "sfd":
        if v["trial_trajectories"] > v["trajectories"]:
            raise BdenseError("--trial-trajectories exceeds --trajectories (the shared cache holds --trajectories)")
        if v["trial_trajectories"] < v["batch"]:
            raise BdenseError(f"--trial-trajectories {v['trial_trajectories']} is smaller than one --batch "
                              f"({v['batch']})")
    if command == "tune":
        from .studies.tune_plan import parse_objective
        parse_objective(v["objective"])
        if v.get("apply"):
            parse_weights(v["apply"], v["branches"] or (2 if v["method"] == "pd" else 4))
