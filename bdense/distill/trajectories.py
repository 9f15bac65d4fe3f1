"""Teacher trajectories for SFD: a pure function of (teacher, solver, grid, seeds), never of the student."""
from __future__ import annotations

import contextlib

import torch

from ..seeds import seed_labels, seed_noise
from ..solvers import solve
from .plan import SFDPlan


def trajectory_seeds(run_seed: int, step: int, batch: int) -> list[int]:
    """Noise seeds of one global batch: run seed s draws from its own block of 10^9 seeds."""
    base = run_seed * 1_000_000_000 + step * batch
    return list(range(base, base + batch))


@torch.no_grad()
def teacher_trajectories(teacher, plan: SFDPlan, seeds: list[int], device, autocast=None):
    """(trajectory [T+1, B, C, H, W] float32 on device, labels or None) from x_T = sigma_max * n(seed)."""
    _, grid = plan.grids()
    shape = (teacher.channels, teacher.resolution, teacher.resolution)
    x = seed_noise(seeds, shape, device) * float(grid[0])
    labels = seed_labels(seeds, teacher.num_classes, device)
    with autocast or contextlib.nullcontext():
        traj = solve(plan.teacher_solver, teacher, x, grid, label=labels, return_trajectory=True)
    return traj.float(), labels
