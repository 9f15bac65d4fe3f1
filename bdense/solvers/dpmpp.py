"""DPM-Solver++ multistep (2M, 3M) with data prediction in the sigma view (alpha = 1, lambda = -log sigma)."""
import math

from .afs import afs_estimate, afs_step
from .common import denoise, euler_step, finish, sigma_list
from .threshold import apply_threshold


ORDER_RULES = ("sfd", "tail", "dpm-solver")


def step_order(order, i, steps, n_hist, s_next, order_rule="dpm-solver"):
    """Order of step i of `steps`: warm up by history, lower it at the end of the grid, order 1 into sigma = 0.

    "sfd": SFD's code (lower_order_final): i + 1 while i + 1 < order, then min(order, steps - i), on EVERY grid
    (a 2-step grid runs orders 1, 2); "tail": min(order, i + 1, steps - i), bdense 0.1's reading of that rule (a
    2-step grid runs 1, 1); "dpm-solver": dpm-solver/diffusers lower the order only when steps < 10.
    """
    if order_rule not in ORDER_RULES:
        raise ValueError(f"order_rule must be one of {ORDER_RULES}, got {order_rule!r}")
    if order_rule == "sfd":
        o = i + 1 if i + 1 < order else min(order, steps - i)
    elif order_rule == "tail" or steps < 10:
        o = min(order, steps - i)
    else:
        o = order
    return 1 if s_next == 0 else min(o, n_hist)


def solve_dpmpp(denoiser, x, sigmas, *, order=2, label=None, afs=False, return_trajectory=False,
                order_rule="dpm-solver", strict_third_order=False, threshold="none", afs_history=False):
    """Multistep DPM-Solver++ of order 1, 2 or 3 (order 1 is Euler exactly); 1 NFE per non-AFS step.

    threshold="dynamic" thresholds every x0 estimate before it enters the history (SFD's teacher; see
    bdense/solvers/threshold.py). With afs, afs_history=True puts the analytical estimate x - t_0 d into the history
    as SFD's sampler does (the first network step can then be second order); False restarts it after the AFS step.

    The 3M update is dpm-solver's reference one, whose D2 ~ h^2 D''/2 carries half the second-derivative
    term, so it is only second order globally; strict_third_order=True doubles D2 and makes it third order.
    """
    d2_scale = 2.0 if strict_third_order else 1.0
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    s = sigma_list(sigmas)
    steps = len(s) - 1
    traj = [x] if return_trajectory else None
    hist = []  # (lambda, D) of the real evaluations, newest last
    for i in range(steps):
        s0, s1 = s[i], s[i + 1]
        if afs and i == 0 and not afs_history:
            x = afs_step(x, s0, s1)
        else:
            d0 = afs_estimate(x, s0) if afs and i == 0 else denoise(denoiser, x, s0, label)
            d0 = apply_threshold(d0, threshold)
            hist = (hist + [(-math.log(s0), d0)])[-3:]
            o = step_order(order, i, steps, len(hist), s1, order_rule)
            if o == 1:
                x = euler_step(x, d0, s0, s1)
            else:
                l0 = hist[-1][0]
                h = -math.log(s1) - l0
                phi_1 = math.expm1(-h)
                l1, m1 = hist[-2]
                r0 = (l0 - l1) / h
                D1_0 = (d0 - m1) / r0
                if o == 2:
                    x = (s1 / s0) * x - phi_1 * d0 - 0.5 * phi_1 * D1_0
                else:
                    l2, m2 = hist[-3]
                    r1 = (l1 - l2) / h
                    D1_1 = (m1 - m2) / r1
                    D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
                    D2 = d2_scale * (D1_0 - D1_1) / (r0 + r1)
                    phi_2 = phi_1 / h + 1.0
                    phi_3 = phi_2 / h - 0.5
                    x = (s1 / s0) * x - phi_1 * d0 + phi_2 * D1 - phi_3 * D2
        if traj is not None:
            traj.append(x)
    return finish(x, traj, return_trajectory)


def solve_dpmpp_2m(denoiser, x, sigmas, *, label=None, afs=False, return_trajectory=False, order_rule="dpm-solver",
                   threshold="none", afs_history=False):
    """DPM-Solver++(2M), midpoint form."""
    return solve_dpmpp(denoiser, x, sigmas, order=2, label=label, afs=afs, return_trajectory=return_trajectory,
                       order_rule=order_rule, threshold=threshold, afs_history=afs_history)


def solve_dpmpp_3m(denoiser, x, sigmas, *, label=None, afs=False, return_trajectory=False, order_rule="dpm-solver",
                   strict_third_order=False, threshold="none", afs_history=False):
    """DPM-Solver++(3M); see solve_dpmpp for strict_third_order, threshold, afs_history and step_order."""
    return solve_dpmpp(denoiser, x, sigmas, order=3, label=label, afs=afs, return_trajectory=return_trajectory,
                       order_rule=order_rule, strict_third_order=strict_third_order, threshold=threshold,
                       afs_history=afs_history)
