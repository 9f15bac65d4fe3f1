"""SFD host with K-branch B-DENSE students: one optimizer step per student interval, L1 summed over pixels.

Interval i starts from the student's own (detached) state x at t_i; branch k takes an Euler step from t_i to
the teacher grid point it targets and is compared with its target there (bdense/distill/sfd/targets.py: the teacher's
state, or that state anchored to the student's own start). K = 1 is plain SFD. With dense_intervals = N only the
first N trained intervals weigh the intermediate branches; later ones train the endpoint alone.
"""
from __future__ import annotations

import torch

from ...solvers.afs import afs_step
from ...solvers.common import euler_step
from ...train.loop import Task, to_device
from .plan import SFDPlan
from .targets import DEFAULT_TARGETS, check_mode, interval_targets
from .trajectories import teacher_steps, teacher_trajectories, trajectory_seeds


def branch_states(x: torch.Tensor, d: torch.Tensor, t: float, targets: list[float]) -> torch.Tensor:
    """Euler steps from (x, t) with branch k's x0 estimate d[:, k] to sigma targets[k]: [B, K, C, H, W]."""
    return torch.stack([euler_step(x, d[:, k], t, s) for k, s in enumerate(targets)], dim=1)


def l1_per_branch(states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SFD's loss per branch: |x - y| summed over pixels, averaged over the batch -> [K]."""
    return (states - targets).abs().flatten(2).sum(2).mean(0)


class SFDTask(Task):
    name = "sfd"
    net_kwargs: dict = {}  # extra keywords of every student call (SFD-v: the step count)

    def __init__(self, teacher, student, plan: SFDPlan, weights, batch: int, seed: int, trajectory_source=None,
                 pool: int | None = None, targets: str = DEFAULT_TARGETS, first_seed: int = 0,
                 dense_intervals: int | None = None):
        self.teacher, self.model, self.plan, self.weights = teacher, student, plan, weights
        self.dense_intervals = dense_intervals  # the first N trained intervals train every branch (None: all)
        self.batch, self.seed, self.mode, self.first_seed = batch, seed, check_mode(targets), first_seed
        self.pool = pool or (trajectory_source.size if trajectory_source is not None else None)
        self.source = trajectory_source  # a cache (issue: trajectories) or None: compute on the fly
        s, t = plan.grids()
        self.t_student, self.t_teacher = s.tolist(), t.tolist()
        self.teacher.requires_grad_(False).eval()

    def to(self, device):
        to_device(self.model, device)
        to_device(self.teacher, device)

    def targets(self, tr, draw):
        """Teacher trajectories of the draw-th batch of the pool (plain SFD: draw = the iteration)."""
        seeds = tr.shard_list([self.first_seed + j for j in
                               trajectory_seeds(self.seed, draw, self.batch, self.pool or (draw + 1) * self.batch)])
        if self.source is not None:
            return self.source.batch(seeds, tr.device)
        return teacher_trajectories(self.teacher, self.plan, seeds, tr.device, autocast=tr.autocast())

    def train_step(self, tr, step):
        return self.walk(tr, step, step)

    def walk(self, tr, step, draw):
        """One iteration: the student walks its grid over one batch of trajectories (see the module doc)."""
        plan = self.plan
        traj, labels = self.targets(tr, draw)
        w = self.weights.at(step, tr.cfg.steps)
        x = traj[0]
        trained = plan.trained_intervals()
        dense = set(trained if self.dense_intervals is None else trained[:self.dense_intervals])
        losses = {}  # interval -> per-branch losses, kept on the device until the iteration ends (no syncs)
        for i in range(plan.points - 1):
            t, t_next = self.t_student[i], self.t_student[i + 1]
            if plan.afs and i == 0:
                x = afs_step(x, t, t_next)
                continue
            idx = [plan.target_index(i, k) for k in range(1, plan.branches + 1)]
            sig = [self.t_teacher[j] for j in idx]
            start = i * plan.substeps
            rerun = (lambda x0, n, a=start: teacher_steps(self.teacher, plan, x0, self.t_teacher[a:a + n + 1], labels,
                                                          tr.autocast()))
            target = interval_targets(self.mode, x, traj, start, idx, t, t_next, sig, rerun)
            with tr.autocast():
                d = tr.ddp_model(x, torch.full((x.shape[0],), t, device=x.device), labels, **self.net_kwargs)
            states = branch_states(x, d.float(), t, sig)
            per_branch = l1_per_branch(states, target)
            wi = w if i in dense else [0.0] * (len(w) - 1) + [w[-1]]
            loss = sum(wk * lk for wk, lk in zip(wi, per_branch))
            tr.backward(loss)
            tr.step()
            x = states[:, -1].detach()
            losses[i] = per_branch.detach()
        values = tr.values(torch.stack(list(losses.values())))  # floats, or device scalars on the fast path
        metrics = {f"loss/i{i}/b{k}": v for i, row in zip(losses, values) for k, v in enumerate(row, 1)}
        metrics["loss"] = sum(row[-1] for row in values)  # endpoint loss summed over intervals: comparable across K
        return metrics
