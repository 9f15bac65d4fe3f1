"""Branch weights w_k for the K-branch loss: constant now; schedules over training plug in here."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BdenseError


def parse_weights(spec: str | list[float] | None, k: int) -> list[float]:
    """'1,1,1,2' or a list -> K positive floats; None -> uniform ones."""
    if spec is None or spec == "" or spec == "uniform":
        return [1.0] * k
    vals = spec if isinstance(spec, list) else [s for s in str(spec).replace(" ", "").split(",") if s]
    try:
        w = [float(v) for v in vals]
    except ValueError:
        raise BdenseError(f"cannot read --branch-weights '{spec}'; give {k} comma-separated numbers like 1,1,1,2") from None
    if len(w) != k:
        raise BdenseError(f"--branch-weights has {len(w)} numbers but --branches is {k}; give exactly {k}")
    if any(not (x > 0) or x != x or x == float("inf") for x in w):
        raise BdenseError(f"--branch-weights must all be positive finite numbers, got {spec}")
    return w


@dataclass(frozen=True)
class ConstantWeights:
    weights: tuple

    def at(self, step: int, total: int) -> list[float]:
        return list(self.weights)

    def describe(self) -> dict:
        return {"type": "constant", "weights": list(self.weights)}
