"""The SFD grid plan: student grid, refined teacher grid, and which teacher state each branch targets."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import BdenseError
from ...solvers import SOLVERS, nfe
from ...solvers.dpmpp import ORDER_RULES
from ...solvers.schedules import nested_polynomial_grids
from ...solvers.threshold import THRESHOLDS

HISTORIES = ("afs", "restart")


def check_branches(k: int, substeps: int) -> None:
    """Branch k of K lands on teacher sub-step k * substeps / K of each interval, so K must divide the sub-steps."""
    if substeps % k:
        ks = ", ".join(str(d) for d in range(1, substeps + 1) if substeps % d == 0)
        raise BdenseError(f"K = {k} branches cannot split the {substeps} teacher sub-steps of each student interval "
                          f"evenly; use a K that divides {substeps} ({ks})")


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
    teacher_threshold: str = "auto"  # DPM-Solver++ only: "dynamic" (SFD's) or "none"; auto = dynamic for dpmpp
    teacher_history: str = "auto"  # DPM-Solver++ with AFS: "afs" (SFD's) or "restart"; auto = afs for dpmpp

    def __post_init__(self):
        resolve_teacher_options(self)
        if not 1 <= self.nfe <= 8:
            raise BdenseError(f"--nfe must be between 1 and 8, got {self.nfe}")
        if self.branches < 1 or self.substeps < 1:
            raise BdenseError("--branches and --teacher-substeps must be >= 1")
        check_branches(self.branches, self.substeps)
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
        return nfe(self.teacher_solver, self.grids()[1], afs=False)

    def describe(self) -> str:
        s, t = self.grids()
        lines = [f"student grid ({self.points} points, NFE {self.nfe}{' with AFS' if self.afs else ''}): "
                 + " ".join(f"{v:.4g}" for v in s.tolist()),
                 f"teacher grid ({len(t)} points, {self.teacher_solver}"
                 + (f" order rule {self.teacher_order_rule}, threshold {self.teacher_threshold}, AFS history "
                    f"{self.teacher_history}" if self.teacher_solver.startswith("dpmpp") else "")
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


def resolve_teacher_options(plan: SFDPlan) -> None:
    """Check the teacher solver's options and resolve "auto": SFD's own (dynamic thresholding, the AFS estimate in
    the history) for DPM-Solver++; Euler and Heun have no history and SFD thresholds only DPM-Solver++'s estimates."""
    if plan.teacher_solver not in SOLVERS:
        raise BdenseError(f"unknown --teacher-solver '{plan.teacher_solver}'; choose one of {', '.join(SOLVERS)}")
    if plan.teacher_order_rule not in ORDER_RULES:
        raise BdenseError(f"unknown --teacher-order-rule '{plan.teacher_order_rule}'; use one of "
                          f"{', '.join(ORDER_RULES)}")
    multistep = plan.teacher_solver.startswith("dpmpp")
    for field, name, values, sfd in (("teacher_threshold", "--teacher-threshold", THRESHOLDS, "dynamic"),
                                     ("teacher_history", "--teacher-history", HISTORIES, "afs")):
        v = getattr(plan, field)
        if v not in values + ("auto",):
            raise BdenseError(f"unknown {name} '{v}'; use one of {', '.join(values)}")
        if v == sfd and not multistep:
            raise BdenseError(f"{name} {v} applies to a dpmpp teacher solver, not {plan.teacher_solver}; drop it")
        if v == "auto":
            object.__setattr__(plan, field, sfd if multistep else values[-1])


TEACHER_FIELDS = ("teacher_solver", "teacher_order_rule", "teacher_threshold", "teacher_history")


def teacher_fields(plan) -> dict:
    """How the teacher solves: of a plan (recorded in a student's meta.distill and options.json), or of a comparison's
    config (what it asks of every plan; "auto" resolved by SFDPlan)."""
    return {k: getattr(plan, k) for k in TEACHER_FIELDS}


def recorded_teacher(d: dict) -> dict:
    """The teacher fields of a plan, cache manifest or student meta written by any version. Records without
    teacher_threshold predate SFD's exact teacher: their "sfd" order rule is today's "tail", with no thresholding
    and the history restarted after AFS; records without an order rule predate it (dpm-solver's)."""
    if "teacher_threshold" in d:
        return {k: d.get(k) for k in TEACHER_FIELDS}
    solver = d.get("teacher_solver", "dpmpp_3m")
    rule = d.get("teacher_order_rule", "dpm-solver" if solver.startswith("dpmpp") else "sfd")  # euler/heun: unused
    return {"teacher_solver": solver, "teacher_order_rule": "tail" if rule == "sfd" and solver.startswith("dpmpp")
            else rule, "teacher_threshold": "none", "teacher_history": "restart"}


def teacher_solver_options(plan: SFDPlan, afs: bool = False) -> dict:
    """Keyword options of solve() that make the plan's teacher solver SFD's (order rule, thresholding, and with
    afs the AFS estimate in the history); Euler and Heun take none."""
    if not plan.teacher_solver.startswith("dpmpp"):
        return {}
    opts = {"order_rule": plan.teacher_order_rule, "threshold": plan.teacher_threshold}
    return dict(opts, afs=True, afs_history=plan.teacher_history == "afs") if afs else opts
