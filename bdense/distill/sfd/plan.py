"""The SFD grid plan: student grid, refined teacher grid, and which teacher state each branch targets."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import BdenseError
from ...solvers import SOLVERS
from ...solvers.schedules import nested_polynomial_grids


@dataclass(frozen=True)
class SFDPlan:
    nfe: int
    branches: int = 1
    substeps: int = 4  # teacher steps per student interval (SFD: M + 1 = 4)
    afs: bool = True
    sigma_min: float = 0.006
    sigma_max: float = 80.0
    rho: float = 7.0
    teacher_solver: str = "dpmpp_3m"
    teacher_order_rule: str = "sfd"  # DPM-Solver++ only: "sfd" lowers the order on every grid's last steps

    def __post_init__(self):
        if not 1 <= self.nfe <= 8:
            raise BdenseError(f"--nfe must be between 1 and 8, got {self.nfe}")
        if self.branches < 1 or self.substeps < 1:
            raise BdenseError("--branches and --teacher-substeps must be >= 1")
        if self.substeps % self.branches:
            raise BdenseError(f"--branches {self.branches} cannot split {self.substeps} teacher sub-steps per interval "
                              f"evenly; use a K that divides --teacher-substeps (or set --teacher-substeps {self.branches})")
        if self.teacher_solver not in SOLVERS:
            raise BdenseError(f"unknown --teacher-solver '{self.teacher_solver}'; choose one of {', '.join(SOLVERS)}")
        from ...solvers.dpmpp import ORDER_RULES
        if self.teacher_order_rule not in ORDER_RULES:
            raise BdenseError(f"unknown --teacher-order-rule '{self.teacher_order_rule}'; use {' or '.join(ORDER_RULES)}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise BdenseError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    @property
    def points(self) -> int:
        """Student grid points N: NFE = N - 1 intervals, less one with AFS."""
        return self.nfe + 1 + int(self.afs)

    def grids(self) -> tuple[torch.Tensor, torch.Tensor]:
        return nested_polynomial_grids(self.points, self.substeps, self.sigma_min, self.sigma_max, self.rho)

    def target_index(self, interval: int, branch: int) -> int:
        """Teacher trajectory index that branch k (1-based) of student interval i lands on."""
        return interval * self.substeps + branch * (self.substeps // self.branches)

    def trained_intervals(self) -> list[int]:
        return list(range(1 if self.afs else 0, self.points - 1))

    def teacher_nfe(self) -> int:
        from ...solvers import nfe
        return nfe(self.teacher_solver, self.grids()[1], afs=False)

    def describe(self) -> str:
        s, t = self.grids()
        lines = [f"student grid ({self.points} points, NFE {self.nfe}{' with AFS' if self.afs else ''}): "
                 + " ".join(f"{v:.4g}" for v in s.tolist()),
                 f"teacher grid ({len(t)} points, {self.teacher_solver}"
                 + (f" order rule {self.teacher_order_rule}" if self.teacher_solver.startswith("dpmpp") else "")
                 + f", {self.teacher_nfe()} NFE per trajectory): "
                 + " ".join(f"{v:.4g}" for v in t.tolist())]
        for i in range(self.points - 1):
            if self.afs and i == 0:
                lines.append(f"  interval 0 [{s[0]:.4g} -> {s[1]:.4g}]: analytical first step, no network, no loss")
                continue
            tg = ", ".join(f"branch {k} -> teacher[{self.target_index(i, k)}] (sigma {t[self.target_index(i, k)]:.4g})"
                           for k in range(1, self.branches + 1))
            lines.append(f"  interval {i} [{s[i]:.4g} -> {s[i + 1]:.4g}]: {tg}")
        return "\n".join(lines)
