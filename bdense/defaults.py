"""The training defaults of `distill`, `compare` and `tune`: one set, the one the measured verdicts used.

A user who leaves an option out gets the setting a table in docs/ was measured with, not an untried one. Each value
names its study; change a value only together with a study that measured the new one.
"""
from __future__ import annotations

# method -> option -> (value, the study it comes from)
STUDIED: dict[str, dict[str, tuple]] = {
    "sfd": {
        "lr": (2e-4, "every SFD table: docs/targets.md, docs/weights.md, the demo"),
        "batch": (64, "docs/targets.md's verdict, the demo"),
        "trajectories": (6400, "per NFE; docs/targets.md's verdict, the demo"),
    },
    "pd": {
        "lr": (3e-4, "docs/confirmation.md: the PD budget search, confirmed on fresh seeds (K = 1 beats the "
                     "teacher's DDIM at 8 and 16 steps)"),
        "batch": (32, "docs/pd.md, docs/confirmation.md"),
        "round_iters": (500, "docs/confirmation.md's PD budget (150, the earlier default, did not beat DDIM)"),
    },
}


def studied(method: str, name: str):
    """The default of option `name` for host `method`; an option the host does not train with (PD's trajectories,
    SFD's round_iters) takes the other host's value, so code that reads it always finds a number."""
    entry = STUDIED.get(method, {}).get(name) or next((t[name] for t in STUDIED.values() if name in t), None)
    return None if entry is None else entry[0]


def fill(method: str, values: dict) -> dict:
    """`values` with every studied option left None set to its default (the one resolution every command uses)."""
    out = dict(values)
    for name in {n for table in STUDIED.values() for n in table}:
        if name in out and out[name] is None:
            out[name] = studied(method, name)
    if out.get("trial_trajectories", 0) is None:  # tune: trials at the full budget (docs/weights.md: short trials
        out["trial_trajectories"] = out.get("trajectories")  # ranked the wrong setting on digits)
    return out


def left_out_line(method: str, values: dict) -> str:
    """The plan's closing line: the studied defaults (with their sources) used for the options in `values` left
    None, so the plan never claims a default for an option that was given ('' when none was left out)."""
    used = [f"{name} {value} ({source})" for name, (value, source) in STUDIED[method].items()
            if name in values and values[name] is None]
    return f"\nstudied defaults, used for options left out: {'; '.join(used)}" if used else ""
