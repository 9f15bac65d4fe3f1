"""Shared solver plumbing: the last-branch denoiser call, the Euler step and grid/trajectory handling."""
import torch

from bdense.errors import BdenseError


def denoise(denoiser, x, sigma, label=None):
    """x0 estimate from the LAST branch of denoiser(x, sigma[B], label) -> [B, K, C, H, W]."""
    if not (torch.is_tensor(sigma) and sigma.ndim == 1):
        sigma = x.new_full((x.shape[0],), float(sigma))
    out = denoiser(x, sigma, label)
    if out.ndim != x.ndim + 1:
        raise BdenseError(f"denoiser must return [B, K, C, H, W], got shape {tuple(out.shape)}; add the branch dim")
    return out[:, -1]


def euler_step(x, d0, s, s_next):
    """PF-ODE Euler step with data prediction d0; lands exactly on d0 at s_next == 0."""
    if s_next == 0:
        return d0
    return x + (s_next - s) * (x - d0) / s


def sigma_list(sigmas):
    """Validate a 1-D descending, non-negative grid and return it as python floats."""
    if torch.is_tensor(sigmas) and sigmas.ndim != 1 or len(sigmas) == 0:
        raise BdenseError("sigmas must be a non-empty 1-D grid; build it with bdense.solvers.schedules.get_sigmas")
    s = [float(v) for v in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if any(b >= a for a, b in zip(s, s[1:])) or s[-1] < 0:
        raise BdenseError(f"sigmas must be strictly descending and >= 0, got {s}; build it with get_sigmas")
    return s


def finish(x, traj, return_trajectory):
    """End state, or every grid state stacked to [len(sigmas), B, C, H, W]."""
    return torch.stack(traj) if return_trajectory else x
