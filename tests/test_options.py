"""Option values: every numeric and list option of every command has a rule (bdense/options.py), random values fed
through the real commands never end in a traceback, and a value the rule refuses is refused before any work."""
from __future__ import annotations

import math
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import run_cli  # noqa: E402

from bdense.errors import BdenseError  # noqa: E402
from bdense.options import (COMMAND_RULES, RULES, Choice, Device, FracList, Int, IntList, Float, Seeds,  # noqa: E402
                            check, rule_for)

# str options that are free text (paths, data specs, weight specs checked by their own parsers)
FREE_TEXT = {"data", "name", "spec", "setting", "branch_weights", "objective", "apply", "trajectory_cache",
             "command", "quality", "classes"}  # classes: --class, read by parse_seeds(flag="--class")


def commands():
    from typer.main import get_command

    from bdense.cli import app
    out = {}
    for name, cmd in get_command(app).commands.items():
        for sub, c in (cmd.commands.items() if hasattr(cmd, "commands") else [(None, cmd)]):
            out[f"{name} {sub}" if sub else name] = c
    return out


def _kind(param):
    ann = param.type_descriptor.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if args and typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType"))\
        else ann


def test_every_numeric_or_list_option_has_a_rule():
    missing = []
    for name, cmd in commands().items():
        for p in cmd.params:
            kind = _kind(p)
            if kind in (int, float) or (kind is str and p.name not in FREE_TEXT):
                if rule_for(name, p.name) is None:
                    missing.append(f"{name} --{p.name}")
    assert not missing, f"give these options a rule in bdense/options.py: {missing}"
    from bdense.options import _flag
    wrong = [f"{n} {p.opts}" for n, c in commands().items() for p in c.params
             if rule_for(n, p.name) is not None and p.param_type_name == "option" and _flag(p.name) not in p.opts]
    assert not wrong, f"messages would name these options by another flag: {wrong}"


def test_rules_accept_their_range_and_refuse_outside_it():
    r = Int(1, 8)
    assert [r("--nfe", v) for v in (1, 8)] == [1, 8]
    for bad in (0, 9, -1, 2**64, True, 2.0):
        with pytest.raises(BdenseError, match="--nfe must be an integer from 1 to 8"):
            r("--nfe", bad)
    f = Float(0, 1)
    assert f("--lr", 1) == 1.0 and f("--lr", 1e-12) == 1e-12
    for bad in (0, -1, 1.0000001, math.nan, math.inf, -math.inf):
        with pytest.raises(BdenseError, match=r"\(0, 1\]"):
            f("--lr", bad)
    e = Float(0, 1, lo_open=False, hi_open=True)
    assert e("--ema-decay", 0) == 0.0
    with pytest.raises(BdenseError, match=r"\[0, 1\)"):
        e("--ema-decay", 1)
    assert IntList(1, 8)("--nfe", "2, 3") == (2, 3) and FracList()("--p", "0.5,1") == (0.5, 1.0)
    for bad in ("", "2,", "2,2", "0", "9", "abc", "1e1"):
        with pytest.raises(BdenseError):
            IntList(1, 8)("--nfe", bad)
    for bad in ("0", "1.01", "nan", "inf", "-0.5", "0.5,0.5", ""):
        with pytest.raises(BdenseError):
            FracList()("--p", bad)
    assert Seeds()("--seeds", "0-2,9") == [0, 1, 2, 9]
    assert Seeds()("--seeds", str(2**63 - 1)) == [2**63 - 1]
    for bad, msg in (("0-99999999999", "more than"), (str(2**63), "2\\^63"), ("-1", "cannot read|0\\.\\."),
                     ("a", "cannot read"), ("", "cannot read"), ("3-1", "backwards")):
        with pytest.raises(BdenseError, match=msg):
            Seeds()("--seeds", bad)


def test_none_is_the_default_and_zero_is_a_value():
    assert check("train-teacher", {"steps": None, "batch": None, "lr": None})["steps"] is None
    for name in ("steps", "batch", "lr"):
        with pytest.raises(BdenseError, match=f"--{name}"):
            check("train-teacher", {name: 0})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_run_is_planned_without_a_gpu_and_refused_when_run(tmp_path):
    """--dry-run only prints the plan, so --device cuda is checked for its form there, not for a GPU (a cluster's
    login node plans what its GPU nodes run); the run itself is refused in one line before any work."""
    for cmd in (["compare", "--out", str(tmp_path / "c"), "--nfe", "2"], ["distill", "--out", str(tmp_path / "d")]):
        argv = [*cmd, "--teacher", "fashion-mnist-tiny", "--device", "cuda"]
        code, out, err = run_cli([*argv, "--dry-run"])
        assert code == 0 and ("runs: 6" in out or "iterations: 100" in out), err
        code, out, err = run_cli(argv)
        assert code == 2 and "CUDA is not available here" in err
        code, out, err = run_cli([*argv[:-1], "gpu", "--dry-run"])  # its form is still checked
        assert code == 2 and "unknown --device 'gpu'" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_a_zero_step_request_is_not_replaced_by_the_default(tmp_path):
    from bdense.train.teacher import train_teacher
    with pytest.raises(BdenseError, match="nothing to train: 0 iterations"):
        train_teacher("digits", str(tmp_path / "o"), preset="tiny", steps=0, progress=False)
    assert not (tmp_path / "o").exists()


# -- random values through every command ------------------------------------------------------------------------
MISSING = "/nonexistent-bdense/x"
BASE = {  # each command with its main input missing: a valid value ends in one "does not exist" line, cheaply
    "data info": "data info npz:{m}.npz",
    "train-teacher": "train-teacher --data npz:{m}.npz --out {t}/o",
    "sample": "sample {m}.safetensors --npz {t}/x.npz",
    "distill": "distill --teacher {m}.safetensors --out {t}/o",
    "trajectories": "trajectories --teacher {m}.safetensors --out {t}/o",
    "compare": "compare --teacher {m}.safetensors --out {t}/c",
    "export": "export {m}.safetensors --out {t}/e.safetensors",
    "fid ref": "fid ref --data npz:{m}.npz --out {t}/r.npz",
    "fid calc": "fid calc --ref {m}.npz --samples {m}-s.npz",
    "train-features": "train-features --data npz:{m}.npz --out {t}/f.safetensors",
    "agreement": "agreement --model {m}.safetensors",
    "tune": "tune --teacher {m}.safetensors --out {t}/t",
    "teachers pack": "teachers pack {m}.safetensors --name x --out {t}/tp",
    "teachers list": "teachers list",
}
JUNK = ["", "abc", "1e", "0x10", "--", " ", "1,2", "nan", "-", "١", "1_000", "9" * 40]


def random_value(rule, rng) -> str:
    """A value a hostile user might type for an option with this rule: near and beyond its bounds, non-finite,
    huge, malformed; sometimes valid."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    if rng.random() < 0.15:
        return pick(JUNK)
    if isinstance(rule, Int):
        return str(pick([rule.lo - 1, rule.lo, rule.hi, rule.hi + 1, 0, -1, 2**63, 2**64 + 1, -2**70,
                         int(rng.integers(-10**6, 10**6)), int(rng.integers(rule.lo, rule.hi, endpoint=True))]))
    if isinstance(rule, Float):
        return pick(["nan", "inf", "-inf", "-0.0", "0", "1e308", "1e-320", "-1", "2", repr(rule.lo), repr(rule.hi),
                     repr(float(rng.uniform(-10, 10))), repr(float(rng.uniform(rule.lo, rule.hi)))])
    if isinstance(rule, (IntList, FracList)):
        n = int(rng.integers(0, 5))
        items = [pick(["0", "1", "2", "8", "9", "-1", "0.5", "1.0", "nan", "1e9", "", "x"]) for _ in range(n)]
        return ",".join(items)
    if isinstance(rule, Seeds):
        a, b = (int(rng.integers(-5, 2**62)) for _ in range(2))
        return pick([f"{a}-{b}", f"0-{b}", str(2**63), str(2**64), "0-99999999999", f"{a}", "5-", "-3", ",",
                     "0-3,7", f"{2**63 - 2}-{2**63 - 1}", "0--1"])
    if isinstance(rule, Choice):
        return pick(list(rule.values) + ["", "foo", rule.values[0].upper(), rule.values[0] + " "])
    if isinstance(rule, Device):
        return pick(["cpu", "cuda", "cuda:99", "gpu", "cpu:0", "mps", ""])
    raise AssertionError(rule)


def _tree(root: Path) -> set:
    return {str(p) for p in root.rglob("*")}


def test_random_values_for_every_option_of_every_command(tmp_path):
    rng = np.random.default_rng(12)
    cmds = commands()
    assert set(BASE) == set(cmds) - {"data fetch"}, "add the new command to BASE"
    runs = 0
    for name, base in BASE.items():
        argv0 = base.format(m=MISSING, t=tmp_path).split()
        for p in cmds[name].params:
            rule = rule_for(name, p.name)
            if rule is None or p.param_type_name != "option":
                continue
            flag = max(p.opts, key=len)
            for _ in range(6):
                value = random_value(rule, rng)
                code, out, err = run_cli(argv0 + [flag, value])
                runs += 1
                lines = [x for x in err.splitlines() if x.strip()]
                where = f"bdense {name} ... {flag} {value!r}"
                assert "Traceback" not in err + out, f"{where}:\n{err}"
                assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {code} {lines}"
                try:
                    rule(flag, value if isinstance(rule, (Choice, Device, Seeds, IntList, FracList)) else
                         (float(value) if isinstance(rule, Float) else int(value)))
                    refused = False
                except (BdenseError, ValueError):
                    refused = True
                if refused:  # the command refused it at the boundary, naming the option, before reading input
                    assert flag in lines[0] or "Invalid value" in lines[0] or "seed" in lines[0], f"{where}: {lines}"
                    assert "does not exist" not in lines[0], f"{where}: the value reached the library: {lines}"
                assert not _tree(tmp_path), f"{where} left {_tree(tmp_path)}"
    assert runs > 300


HOSTILE_TEXT = ["", ":", "::", "a:99999999999999999999", "a:1:nan", "x:-1", "b:0", "decay:linear:nan",
                "decay:cosine:0:0.9-0.1", "end:inf", "end:0", "combo:nan", "combo:", "sum1:0,0", "1e400,1", "nan,1",
                "npz:", "folder:", "cifar10:/", "uniform:", "é:2", "a" * 5000]


def test_hostile_text_for_every_free_text_option(tmp_path):
    """Weight specs, settings, objectives, data specs: free text parsed by their own readers, never a traceback."""
    cmds = commands()
    runs = 0
    for name, base in BASE.items():
        argv0 = base.format(m=MISSING, t=tmp_path).split()
        for p in cmds[name].params:
            if p.name not in FREE_TEXT or p.param_type_name != "option":
                continue
            flag = max(p.opts, key=len)
            for value in HOSTILE_TEXT:
                argv = argv0 + [flag, value]
                if flag == "--data" and "--data" in argv0:  # replace the missing data set, keep it missing
                    i = argv0.index("--data")
                    argv = argv0[:i] + argv0[i + 2:] + [flag, value]
                code, out, err = run_cli(argv)
                runs += 1
                lines = [x for x in err.splitlines() if x.strip()]
                where = f"bdense {name} ... {flag} {value[:40]!r}"
                assert "Traceback" not in err + out, f"{where}:\n{err[-3000:]}"
                assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"{where}: {code} {lines}"
                assert not _tree(tmp_path), f"{where} left {_tree(tmp_path)}"
    assert runs > 100


def test_every_rule_is_used_by_a_command():
    used = {(n, p.name) for n, c in commands().items() for p in c.params if rule_for(n, p.name) is not None}
    names = {p for _, p in used}
    assert not set(RULES) - names, f"rules no command uses: {set(RULES) - names}"
    assert not set(COMMAND_RULES) - used, f"command rules no command uses: {set(COMMAND_RULES) - used}"
