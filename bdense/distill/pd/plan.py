"""Progressive distillation's round plan: start and end steps, rounds, branch targets, the sampling recipe.

The VP conventions (z_t = a_t x + s_t eps, the cosine map of t to sigma) are those of bdense/distill/pd/task.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import BdenseError
from ...solvers.schedules import cosine_sigma


def _power_of_two(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and n & (n - 1) == 0


LAST_STEP_TARGETS = ("x-pred", "ddim")
WEIGHT_SPANS = ("round", "all")


@dataclass(frozen=True)
class PDPlan:
    start_steps: int = 64  # teacher DDIM steps of round 1
    end_steps: int = 8  # student steps after the last round
    branches: int = 2
    round_iters: int = 400
    sigma_min: float = math.exp(-10)
    sigma_max: float = math.exp(10)
    last_step_target: str = "x-pred"  # at t = 1/N: x-pred (reference: the teacher's x at the midpoint) | ddim
    weight_span: str = "round"  # a scheduled branch weight restarts each round (round) or spans every round (all)

    def __post_init__(self):
        if self.last_step_target not in LAST_STEP_TARGETS:
            raise BdenseError(f"unknown --last-step-target '{self.last_step_target}'; use x-pred or ddim")
        if self.weight_span not in WEIGHT_SPANS:
            raise BdenseError(f"unknown --weight-span '{self.weight_span}'; use round or all")
        if self.branches not in (1, 2):
            raise BdenseError(f"progressive distillation takes --branches 1 (plain PD) or 2 (B-DENSE: midpoint and "
                              f"endpoint of the two teacher steps), got {self.branches}")
        powers = _power_of_two(self.start_steps) and _power_of_two(self.end_steps)
        if not powers or self.start_steps <= self.end_steps:
            raise BdenseError(f"--start-steps and --end-steps must be powers of two with start > end, got "
                              f"{self.start_steps} and {self.end_steps} (e.g. 64 and 8)")
        if self.round_iters < 1:
            raise BdenseError(f"--round-iters must be >= 1, got {self.round_iters}")

    @property
    def rounds(self) -> list[int]:
        """Student steps N of each round: start/2, start/4, ..., end."""
        out, n = [], self.start_steps // 2
        while n >= self.end_steps:
            out.append(n)
            n //= 2
        return out

    @property
    def total_iters(self) -> int:
        return len(self.rounds) * self.round_iters

    def sigma(self, t):
        """sigma(t) (float64 for tensors): the cosine schedule clipped to [sigma_min, sigma_max]."""
        if torch.is_tensor(t):
            t = t.double()
        return cosine_sigma(t, self.sigma_min, self.sigma_max)

    def recipe(self, n: int | None = None, clip: bool = False) -> dict:
        """DDIM (Euler) on the grid t = i/N, i = N..1 (N: the last round's steps by default), then a last step to
        sigma 0 (lands on x-hat); clip: clamp x-hat to [-1, 1] at every step, as the reference sampler does."""
        n = n or self.end_steps
        smin = self.sigma(1.0 / n) if n > 1 else self.sigma_min  # n == 1: the grid is [sigma_max, 0]
        out = dict(solver="euler", nfe=n, schedule="time-uniform", sigma_min=smin, sigma_max=self.sigma_max,
                   rho=7.0, afs=False, final_zero=True)
        return dict(out, clip_denoised=True) if clip else out

    def weight_position(self, step: int) -> tuple[int, int]:
        """(step, total) at which a branch-weight schedule is read: within the round (reference-style restart)."""
        if self.weight_span == "round":
            return step % self.round_iters, self.round_iters
        return step, self.total_iters

    def describe(self) -> str:
        lines = []
        for r, n in enumerate(self.rounds):
            lo = r * self.round_iters
            def pts(off):
                v = [f"{(i - off)}/{n}" for i in range(1, n + 1)]
                return ", ".join(v if n <= 4 else v[:2] + ["..."] + v[-1:])
            lines.append(f"round {r + 1}/{len(self.rounds)}: teacher {2 * n} DDIM steps -> student {n} steps, "
                         f"iterations {lo}..{lo + self.round_iters - 1}; t = i/{n}, i = 1..{n} ({pts(0)})")
            if self.branches == 2:
                lines.append(f"    branch 1 -> teacher z at t - 0.5/{n} ({pts(0.5)}); "
                             f"branch 2 -> teacher z at t - 1/{n} ({pts(1)})")
            else:
                lines.append(f"    branch 1 -> teacher z at t - 1/{n} ({pts(1)})")
        return "\n".join(lines)
