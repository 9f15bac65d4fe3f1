"""ODE solvers on the EDM sigma view; every solver sees only denoiser(x, sigma[B], label)[:, -1]."""
from bdense.errors import BdenseError

from .afs import afs_step
from .common import denoise, euler_step
from .dpmpp import solve_dpmpp, solve_dpmpp_2m, solve_dpmpp_3m
from .euler import solve_euler
from .heun import solve_heun
from .schedules import (cosine_sigma, cosine_t, get_sigmas, logsnr_sigmas, nested_polynomial_grids,
                        polynomial_sigmas, time_uniform_sigmas)

SOLVERS = {"euler": solve_euler, "heun": solve_heun, "dpmpp_2m": solve_dpmpp_2m, "dpmpp_3m": solve_dpmpp_3m}


def _check_name(name):
    if name not in SOLVERS:
        raise BdenseError(f"unknown solver {name!r}; use one of {', '.join(SOLVERS)}")


def solve(name, denoiser, x, sigmas, **kw):
    """Dispatch to SOLVERS[name](denoiser, x, sigmas, **kw)."""
    _check_name(name)
    return SOLVERS[name](denoiser, x, sigmas, **kw)


def nfe(solver_name, sigmas, afs=False):
    """Network evaluations a solver spends on the grid sigmas."""
    _check_name(solver_name)
    s = [float(v) for v in sigmas]
    steps = range(1 if afs else 0, len(s) - 1)
    if solver_name == "heun":
        return sum(1 if s[i + 1] == 0 else 2 for i in steps)
    return len(steps)


def steps_for_nfe(solver_name, nfe, afs=False, final_zero=False):
    """Number n of schedule points (pass to get_sigmas(..., n, append_zero=final_zero)) that costs exactly nfe."""
    _check_name(solver_name)
    if nfe < 1:
        raise BdenseError(f"NFE must be >= 1, got {nfe}")
    if solver_name == "heun":
        if (nfe + final_zero) % 2:
            fix = ("use an odd NFE, or end at sigma_min (final_zero=False)" if final_zero
                   else "use an even NFE, or end the grid at 0 (final_zero=True)")
            raise BdenseError(f"heun cannot spend exactly {nfe} NFE (2 per step, 1 for a final step to 0): {fix}")
        intervals = (nfe + final_zero) // 2
    else:
        intervals = nfe
    return intervals + int(afs) + 1 - int(final_zero)


__all__ = ["SOLVERS", "solve", "nfe", "steps_for_nfe", "denoise", "euler_step", "afs_step", "solve_euler",
           "solve_heun", "solve_dpmpp", "solve_dpmpp_2m", "solve_dpmpp_3m", "get_sigmas", "polynomial_sigmas",
           "logsnr_sigmas", "time_uniform_sigmas", "cosine_sigma", "cosine_t", "nested_polynomial_grids"]
