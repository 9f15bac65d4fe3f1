"""A sampling recipe (solver, NFE, grid) that travels inside every model's config, so `bdense sample` needs no flags."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ..errors import BdenseError
from ..solvers import SOLVERS
from ..solvers.dpmpp import ORDER_RULES
from ..solvers.schedules import get_sigmas
from ..solvers.threshold import THRESHOLDS


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
    clip_denoised: bool = False  # clamp the x-prediction to [-1, 1] at every step (PD's reference sampler does)
    # DPM-Solver++ only (bdense/solvers/dpmpp.py); SFD's sampler is order_rule sfd, threshold dynamic, afs_history
    order_rule: str = "dpm-solver"
    threshold: str = "none"
    afs_history: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "Recipe":
        """A recipe read from a model file: unknown fields or impossible values are refused in one line."""
        fix = "the file is corrupt or was edited: re-export the model or use another checkpoint"
        if d is not None and not isinstance(d, dict):
            raise BdenseError(f"the model's sampling recipe is corrupt (not a mapping); {fix}")
        try:
            r = cls(**(d or {}))
        except TypeError as e:
            raise BdenseError(f"the model's sampling recipe is corrupt ({e}); {fix}") from None
        r.check(fix)
        return r

    def check(self, fix: str = "") -> None:
        import math
        num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        ok = (isinstance(self.nfe, int) and not isinstance(self.nfe, bool) and 1 <= self.nfe <= 1000
              and num(self.sigma_min) and num(self.sigma_max) and num(self.rho) and 0 < self.sigma_min < self.sigma_max
              and self.rho > 0 and isinstance(self.afs, bool) and isinstance(self.final_zero, bool)
              and isinstance(self.clip_denoised, bool) and isinstance(self.afs_history, bool)
              and self.order_rule in ORDER_RULES and self.threshold in THRESHOLDS
              and isinstance(self.solver, str) and isinstance(self.schedule, str))
        if not ok:
            raise BdenseError(f"the sampling recipe {self.to_dict()} is corrupt or impossible; "
                              f"{fix or 'fix its solver, nfe, sigma range or rho'}")
        extra = [f"{k}={v}" for k, v in self.multistep_options().items() if v != RECIPE_DEFAULTS[k]]
        if extra and not self.solver.startswith("dpmpp"):
            raise BdenseError(f"{', '.join(extra)}: only the dpmpp solvers take this, not {self.solver}; "
                              f"{fix or 'drop them or choose --solver dpmpp_2m|dpmpp_3m'}")

    def multistep_options(self) -> dict:
        return {"order_rule": self.order_rule, "threshold": self.threshold, "afs_history": self.afs_history}

    def solver_options(self) -> dict:
        """Keywords of solve() beyond the grid: afs, plus the DPM-Solver++ options for a dpmpp solver."""
        return dict(afs=self.afs, **(self.multistep_options() if self.solver.startswith("dpmpp") else {}))

    def to_dict(self) -> dict:
        """Without the later fields at their defaults, so files stay readable by versions that predate them."""
        return {k: v for k, v in asdict(self).items() if k not in RECIPE_DEFAULTS or v != RECIPE_DEFAULTS[k]}

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


RECIPE_DEFAULTS = {"clip_denoised": False, "order_rule": "dpm-solver", "threshold": "none", "afs_history": False}


def default_recipe(kind: str, sigma_min: float, sigma_max: float) -> Recipe:
    """Teachers sample with EDM's Heun at 35 NFE on the rho=7 grid clipped to the model's sigma range."""
    return Recipe(sigma_min=max(0.002, sigma_min), sigma_max=min(80.0, sigma_max))


def off_grid_note(config: dict, recipe: Recipe, counts=()) -> str:
    """'' when `recipe` samples a distilled student on the grid it was trained for (an SFD-v student: any of its
    trained `counts`); else one line saying what moved (a few-step student learns its own grid's jumps: another
    NFE, solver or schedule leaves them)."""
    meta = config.get("meta") or {}
    trained = meta.get("sampling")
    if meta.get("role") != "student" or not trained:
        return ""
    keys = ("solver", "nfe", "schedule", "sigma_min", "sigma_max", "rho", "afs")
    moved = [f"{k} {trained.get(k)} -> {getattr(recipe, k)}" for k in keys
             if k in trained and trained[k] != getattr(recipe, k) and not (k == "nfe" and recipe.nfe in counts)]
    if not moved:
        return ""
    return (f"note: this student was distilled for {trained.get('solver')} NFE {trained.get('nfe')}; sampling with "
            f"{', '.join(moved)} leaves that grid, so expect worse images (drop the overrides to sample it as trained)")
