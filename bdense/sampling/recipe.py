"""A sampling recipe (solver, NFE, grid) that travels inside every model's config, so `bdense sample` needs no flags."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ..errors import BdenseError
from ..solvers import SOLVERS
from ..solvers.schedules import get_sigmas


@dataclass(frozen=True)
class Recipe:
    solver: str = "heun"
    nfe: int = 35
    schedule: str = "polynomial"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    afs: bool = False
    final_zero: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> "Recipe":
        return cls(**(d or {}))

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **kw) -> "Recipe":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def sigmas(self) -> torch.Tensor:
        """The grid (float64) this recipe integrates over."""
        from ..solvers import steps_for_nfe
        if self.solver not in SOLVERS:
            raise BdenseError(f"unknown solver '{self.solver}'; choose one of {', '.join(SOLVERS)}")
        if self.nfe < 1:
            raise BdenseError(f"NFE must be >= 1, got {self.nfe}")
        n = steps_for_nfe(self.solver, self.nfe, self.afs, self.final_zero)
        return get_sigmas(self.schedule, n, self.sigma_min, self.sigma_max, self.rho, append_zero=self.final_zero)


def default_recipe(kind: str, sigma_min: float, sigma_max: float) -> Recipe:
    """Teachers sample with EDM's Heun at 35 NFE on the rho=7 grid clipped to the model's sigma range."""
    return Recipe(sigma_min=max(0.002, sigma_min), sigma_max=min(80.0, sigma_max))
