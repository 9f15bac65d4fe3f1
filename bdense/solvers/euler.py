"""First-order Euler (DDIM) solver of the PF-ODE in the EDM sigma view."""
from .afs import afs_step
from .common import denoise, euler_step, finish, sigma_list


def solve_euler(denoiser, x, sigmas, *, label=None, afs=False, return_trajectory=False):
    """Euler over the grid sigmas; 1 NFE per step (0 for an AFS first step)."""
    s = sigma_list(sigmas)
    traj = [x] if return_trajectory else None
    for i in range(len(s) - 1):
        if afs and i == 0:
            x = afs_step(x, s[0], s[1])
        else:
            x = euler_step(x, denoise(denoiser, x, s[i], label), s[i], s[i + 1])
        if traj is not None:
            traj.append(x)
    return finish(x, traj, return_trajectory)
