"""Second-order Heun solver (EDM Algorithm 1 without churn)."""
from .afs import afs_step
from .common import denoise, euler_step, finish, sigma_list


def solve_heun(denoiser, x, sigmas, *, label=None, afs=False, return_trajectory=False):
    """Euler predictor + trapezoid corrector unless the next sigma is 0; 2 NFE per step (1 for the last into 0)."""
    s = sigma_list(sigmas)
    traj = [x] if return_trajectory else None
    for i in range(len(s) - 1):
        s0, s1 = s[i], s[i + 1]
        if afs and i == 0:
            x = afs_step(x, s0, s1)
        else:
            d = denoise(denoiser, x, s0, label)
            x_e = euler_step(x, d, s0, s1)
            if s1 == 0:
                x = x_e
            else:
                d2 = denoise(denoiser, x_e, s1, label)
                x = x + (s1 - s0) * 0.5 * ((x - d) / s0 + (x_e - d2) / s1)
        if traj is not None:
            traj.append(x)
    return finish(x, traj, return_trajectory)
