"""Speed machinery for the GPU path: compiled networks, big-batch teacher rollouts, CUDA math settings.

Everything here is opt-in or CUDA-only, so that the CPU default path stays bit-identical (tests compare it with
an independent reference run). What it offers:
  * compile_net: torch.compile of a denoiser's network *in place* (nn.Module.compile), so state_dict keys, saved
    files and the optimizer see the same module; the preconditioning around it stays eager (cheap elementwise).
    The first call compiles (seconds to minutes); the Trainer logs the first iteration's time separately.
    BDENSE_COMPILE_BACKEND=eager traces with dynamo but skips inductor (the CPU dry run of the GPU study uses it).
  * PrefetchedTeacher: teacher trajectories for `factor` training iterations in one teacher batch (a small
    student batch leaves a GPU idle; the no-grad teacher forward is most of SFD's cost). Same seeds, same order,
    same trajectories up to float rounding of the larger batch; a drop-in trajectory source for SFDTask.
  * cuda_math: TF32 matmuls/convolutions for fp32 on CUDA (bf16 autocast is the recommended GPU precision).
The Trainer's own CUDA path (fused Adam, no host syncs per optimizer step) lives in train/loop.py (fast_path).
"""
from __future__ import annotations

import os

import torch

from ..errors import BdenseError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_net(denoiser, mode: str | None = None):
    """Compile denoiser.net in place (keys, parameters and saved files unchanged); returns the denoiser."""
    if mode not in (None, *COMPILE_MODES):
        raise BdenseError(f"unknown --compile-mode '{mode}'; use one of {', '.join(COMPILE_MODES)}")
    backend = os.environ.get("BDENSE_COMPILE_BACKEND", "inductor")
    kw = {"backend": backend, "dynamic": False}
    if mode and mode != "default" and backend == "inductor":
        kw["mode"] = mode
    denoiser.net.compile(**kw)
    return denoiser


def uncompile_net(denoiser):
    """Back to eager (e.g. before sampling a grid at another batch size, which would compile again)."""
    if getattr(denoiser.net, "_compiled_call_impl", None) is not None:
        denoiser.net._compiled_call_impl = None
    return denoiser


def cuda_math(tf32: bool = True) -> None:
    """Allow TF32 in fp32 matmuls and convolutions on CUDA (no effect on CPU)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True


class PrefetchedTeacher:
    """SFD targets for `factor` iterations at once: one teacher rollout at batch factor x batch, served in slices.

    The seeds of every iteration are those SFDTask asks for (trajectory_seeds of the run seed); a request that
    is not in the current block (the first one, or after --resume) computes the block that starts at its
    iteration. One process only (under several processes each computes its own rows; use factor 1 there)."""

    def __init__(self, teacher, plan, run_seed: int, batch: int, pool: int, factor: int, autocast=None,
                 first_seed: int = 0):
        if factor < 1:
            raise BdenseError(f"--teacher-batch must be a multiple of --batch (factor {factor})")
        from ..distill.sfd.trajectories import trajectory_seeds
        self.teacher, self.plan, self.step_batch, self.pool, self.factor = teacher, plan, batch, pool, factor
        self.autocast = autocast
        self.order = [first_seed + j for j in (range(pool) if run_seed == 0 else  # as SFDTask.targets asks for them
                                               trajectory_seeds(run_seed, 0, pool, pool))]
        self.position = {s: i for i, s in enumerate(self.order)}
        self.size = pool
        self.block: dict[int, int] = {}
        self.traj = self.labels = None
        self.rollouts = 0

    def batch(self, seeds: list[int], device):
        from ..distill.sfd.trajectories import teacher_trajectories
        rows = [self.block.get(s) for s in seeds]
        if None in rows:
            first = self.position[seeds[0]] // self.step_batch * self.step_batch
            block = self.order[first:min(first + self.factor * self.step_batch, self.pool)]
            ctx = self.autocast() if self.autocast is not None else None
            self.traj, self.labels = teacher_trajectories(self.teacher, self.plan, block, device, autocast=ctx)
            self.block = {s: i for i, s in enumerate(block)}
            self.rollouts += 1
            rows = [self.block[s] for s in seeds]
        lo = rows[0]
        if rows == list(range(lo, lo + len(rows))):  # the usual case: a contiguous slice, no copy
            idx = slice(lo, lo + len(rows))
        else:
            idx = torch.tensor(rows, device=self.traj.device)
        return self.traj[:, idx], (self.labels[idx] if self.labels is not None else None)
