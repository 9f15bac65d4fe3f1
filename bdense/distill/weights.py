"""Branch weights w_k for the K-branch loss, constant or changing over training, from one spec string.

Specs (K branches, branch K is the endpoint that is sampled):
  uniform                 w = 1 for every branch
  ramp                    w_k = k / K: later sub-steps weigh more, the endpoint 1 (0.25, 0.5, 0.75, 1 for K = 4)
  1,1,1,2                 K positive numbers
  sum1:1,1,1,2            the same, normalised to sum 1
  end:A[:uniform|linear]  endpoint weight A in (0, 1]; the other branches share 1 - A equally, or in
                          proportion to k (linear: later sub-steps get more)
  decay:linear|cosine:F[:S-E]  intermediate weights fall from 1 to the floor F (endpoint stays 1) over the
                          fraction S..E of training (default 0-1): dense early, endpoint-only late when F = 0
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BdenseError


WEIGHT_RANGE = (1e-6, 1e6)


def _numbers(text: str, k: int, spec: str) -> list[float]:
    try:
        w = [float(v) for v in text.replace(" ", "").split(",")]  # an empty field is an error, not skipped
    except ValueError:
        raise BdenseError(f"cannot read branch weights '{spec}'; give {k} comma-separated numbers like 1,1,1,2") from None
    if len(w) != k:
        raise BdenseError(f"branch weights '{spec}' have {len(w)} numbers but --branches is {k}; give exactly {k}")
    if any(not (x > 0) or math.isinf(x) for x in w):
        raise BdenseError(f"branch weights must all be positive finite numbers, got '{spec}'")
    if any(not WEIGHT_RANGE[0] <= x <= WEIGHT_RANGE[1] for x in w):  # 1e308 overflows the loss: every step skipped
        raise BdenseError(f"branch weights '{spec}' must each lie in [{WEIGHT_RANGE[0]:g}, {WEIGHT_RANGE[1]:g}] "
                          f"(beyond, the weighted loss over- or underflows); scale them, e.g. sum1:{text}")
    return w


@dataclass(frozen=True)
class WeightSchedule:
    kind: str  # constant | decay
    base: tuple  # the weights at the start of training
    floor: float = 1.0
    shape: str = "linear"
    start: float = 0.0
    end: float = 1.0
    spec: str = "uniform"

    def at(self, step: int, total: int) -> list[float]:
        if self.kind == "constant":
            return list(self.base)
        frac = min(1.0, max(0.0, (step / max(total, 1) - self.start) / max(self.end - self.start, 1e-12)))
        ramp = frac if self.shape == "linear" else 0.5 * (1 - math.cos(math.pi * frac))
        scale = 1.0 + (self.floor - 1.0) * ramp
        return [w * scale for w in self.base[:-1]] + [self.base[-1]]

    def describe(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "base": list(self.base), "floor": self.floor,
                "shape": self.shape, "start": self.start, "end": self.end}


def parse_weights(spec: str | None, k: int) -> WeightSchedule:
    spec = (spec or "uniform").strip()
    if not 1 <= k <= 64:
        raise BdenseError(f"--branches must be between 1 and 64, got {k}")
    head, _, rest = spec.partition(":")
    if spec == "uniform":
        return WeightSchedule("constant", (1.0,) * k, spec=spec)
    if spec == "ramp":
        return WeightSchedule("constant", tuple((i + 1) / k for i in range(k)), spec=spec)
    if head == "sum1":
        w = _numbers(rest, k, spec)
        return WeightSchedule("constant", tuple(x / sum(w) for x in w), spec=spec)
    if head == "end":
        a_txt, _, rule = rest.partition(":")
        try:
            a = float(a_txt)
        except ValueError:
            a = float("nan")
        if not 0 < a <= 1 or rule not in ("", "uniform", "linear"):
            raise BdenseError(f"cannot read '{spec}'; write end:A or end:A:linear with 0 < A <= 1")
        if k == 1:
            return WeightSchedule("constant", (1.0,), spec=spec)
        if a == 1:
            raise BdenseError(f"'{spec}' gives the intermediate branches weight 0; use A < 1 (or --branches 1)")
        share = [1.0] * (k - 1) if rule in ("", "uniform") else [float(i) for i in range(1, k)]
        return WeightSchedule("constant", tuple((1 - a) * s / sum(share) for s in share) + (a,), spec=spec)
    if head == "decay":
        parts = rest.split(":")
        if len(parts) > 3:
            raise BdenseError(f"cannot read '{spec}': extra fields after decay:SHAPE:FLOOR:S-E; drop them")
        try:
            shape, floor = parts[0], float(parts[1])
            start, end = (float(x) for x in parts[2].split("-")) if len(parts) > 2 else (0.0, 1.0)
        except (IndexError, ValueError):
            raise BdenseError(f"cannot read '{spec}'; write decay:linear:0.1 or decay:cosine:0:0.2-0.8") from None
        if shape not in ("linear", "cosine") or not 0 <= floor <= 1 or not 0 <= start < end <= 1:
            raise BdenseError(f"'{spec}': shape must be linear or cosine, 0 <= floor <= 1, 0 <= S < E <= 1")
        return WeightSchedule("decay", (1.0,) * k, floor, shape, start, end, spec=spec)
    return WeightSchedule("constant", tuple(_numbers(spec, k, spec)), spec=spec)


def ConstantWeights(weights) -> WeightSchedule:  # noqa: N802 (reads like the constant-weights type it builds)
    """Fixed weights given as numbers."""
    w = tuple(float(x) for x in weights)
    return WeightSchedule("constant", w, spec=",".join(f"{x:g}" for x in w))
