"""Teacher trajectories for SFD: a pure function of (teacher, solver, grid, seeds), never of the student."""
from __future__ import annotations

import contextlib

import torch

from ...errors import BdenseError
from ...seeds import seed_labels, seed_noise
from ...solvers import solve
from .plan import SFDPlan, teacher_solver_options


def trajectory_seeds(run_seed: int, step: int, batch: int, pool: int) -> list[int]:
    """Noise seeds of one global batch. Trajectory i of a pool of `pool` comes from noise seed i; the training
    seed fixes the order (seed 0 in order, others a seeded permutation), so one cached pool serves every seed."""
    lo, hi = step * batch, (step + 1) * batch
    if hi > pool:
        raise BdenseError(f"step {step} needs trajectories up to {hi} but the pool holds {pool}; "
                          f"make a larger cache or train on fewer trajectories")
    if run_seed == 0:
        return list(range(lo, hi))
    return torch.randperm(pool, generator=torch.Generator().manual_seed(run_seed))[lo:hi].tolist()


@torch.no_grad()
def teacher_steps(teacher, plan: SFDPlan, x, sigmas, labels=None, autocast=None, keep_start=False):
    """The teacher solver from x over sigmas: its states after each step [len(sigmas) - 1, B, C, H, W]
    (with x itself first when keep_start)."""
    with autocast or contextlib.nullcontext():
        traj = solve(plan.teacher_solver, teacher, x, sigmas, label=labels, return_trajectory=True,
                     **teacher_solver_options(plan))
    return (traj if keep_start else traj[1:]).float()


def teacher_trajectories(teacher, plan: SFDPlan, seeds: list[int], device, autocast=None):
    """(trajectory [T+1, B, C, H, W] float32 on device, labels or None) from x_T = sigma_max * n(seed)."""
    _, grid = plan.grids()
    shape = (teacher.channels, teacher.resolution, teacher.resolution)
    x = seed_noise(seeds, shape, device) * float(grid[0])
    labels = seed_labels(seeds, teacher.num_classes, device)
    return teacher_steps(teacher, plan, x, grid, labels, autocast, keep_start=True), labels
