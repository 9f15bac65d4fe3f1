"""Solver correctness on Gaussian data, where the ideal denoiser and the PF-ODE solution are exact."""
import math

import pytest
import torch
from gaussian import GaussianDenoiser

from bdense.errors import BdenseError
from bdense.solvers import (SOLVERS, afs_step, cosine_sigma, cosine_t, get_sigmas, nested_polynomial_grids, nfe,
                            polynomial_sigmas, solve, solve_dpmpp, solve_euler, steps_for_nfe, time_uniform_sigmas)

SMAX, SMIN = 80.0, 0.002
CASES = [("euler", {}, 1), ("heun", {}, 2), ("dpmpp_2m", {}, 2), ("dpmpp_3m", {"strict_third_order": True}, 3)]


def _rmse(a, b):
    return (a - b).pow(2).mean().sqrt().item()


def _run(name, n_nfe, final_zero=False, batch=16, **kw):
    den = GaussianDenoiser()
    x = den.sample_prior(batch, SMAX)
    sig = get_sigmas("polynomial", steps_for_nfe(name, n_nfe, False, final_zero), SMIN, SMAX, append_zero=final_zero)
    return _rmse(solve(name, den, x, sig, **kw), den.exact(x, SMAX, float(sig[-1])))


def _slope(name, kw, steps=(20, 40, 80, 160)):
    den = GaussianDenoiser()
    x = den.sample_prior(8, SMAX)
    ref = den.exact(x, SMAX, SMIN)
    errs = [(solve(name, den, x, get_sigmas("polynomial", n + 1, SMIN, SMAX), **kw) - ref).abs().max().item()
            for n in steps]
    lx, ly = torch.tensor(steps, dtype=torch.float64).log(), torch.tensor(errs).log()
    return -(((lx - lx.mean()) * (ly - ly.mean())).sum() / (lx - lx.mean()).pow(2).sum()).item(), errs


@pytest.mark.parametrize("name,kw,order", CASES)
def test_convergence_order(name, kw, order, record_property):
    p, errs = _slope(name, kw)
    print(f"\n[order] {name}{kw or ''}: measured {p:.2f} (theory {order}); max errors {['%.1e' % e for e in errs]}")
    record_property(f"order_{name}", p)
    assert p > order - 0.3


def test_reference_3m_is_second_order_only(record_property):
    # dpm-solver's multistep third update has D2 ~ h^2 D''/2, i.e. half the second-derivative term.
    p, _ = _slope("dpmpp_3m", {})
    print(f"\n[order] dpmpp_3m (dpm-solver reference D2): measured {p:.2f}")
    record_property("order_dpmpp_3m_reference", p)
    assert 1.3 < p < 2.6


@pytest.mark.parametrize("final_zero,n_nfe", [(False, 40), (True, 41)])
def test_equal_nfe_ranking(final_zero, n_nfe):
    e = {n: _run(n, n_nfe, final_zero) for n in SOLVERS}
    print(f"\n[NFE {n_nfe}, final_zero={final_zero}] " + " ".join(f"{k}={v:.2e}" for k, v in e.items()))
    assert e["dpmpp_3m"] < e["dpmpp_2m"] < e["heun"] < e["euler"]


@pytest.mark.parametrize("n_nfe", [6, 10])
def test_low_nfe_multistep_beats_euler(n_nfe):
    # On this toy problem Heun is worse than Euler below ~NFE 24 (trapezoid over huge rho=7 steps), so only print it.
    e = {n: _run(n, n_nfe) for n in SOLVERS}
    print(f"\n[NFE {n_nfe}] " + " ".join(f"{k}={v:.2e}" for k, v in e.items()))
    assert max(e["dpmpp_2m"], e["dpmpp_3m"]) < e["euler"]


def test_order1_dpmpp_equals_euler():
    den = GaussianDenoiser()
    x = den.sample_prior(4, SMAX)
    for zero in (False, True):
        sig = get_sigmas("polynomial", 7, SMIN, SMAX, append_zero=zero)
        assert (solve_dpmpp(den, x, sig, order=1) - solve_euler(den, x, sig)).abs().max() < 1e-12


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("zero", [False, True])
def test_trajectory_and_nfe(name, afs, zero):
    den = GaussianDenoiser()
    x = den.sample_prior(3, SMAX)
    sig = get_sigmas("polynomial", 6, SMIN, SMAX, append_zero=zero)
    traj = solve(name, den, x, sig, afs=afs, return_trajectory=True)
    assert traj.shape == (len(sig), *x.shape) and torch.equal(traj[0], x)
    expect = (len(sig) - 1 - afs) * (2 if name == "heun" else 1) - (name == "heun" and zero)
    assert den.calls == nfe(name, sig, afs) == expect
    den.calls = 0
    assert torch.equal(traj[-1], solve(name, den, x, sig, afs=afs)) and den.calls == nfe(name, sig, afs)
    if zero and not (afs and len(sig) == 2):
        assert torch.allclose(traj[-1], den(traj[-2], sig[-2:-1].expand(3))[:, -1])  # last step lands on D


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("zero", [False, True])
def test_steps_for_nfe_roundtrip(name, afs, zero):
    for k in range(1, 12):
        try:
            n = steps_for_nfe(name, k, afs, zero)
        except BdenseError as e:
            assert name == "heun" and "heun" in str(e) and "\n" not in str(e)
            continue
        assert nfe(name, get_sigmas("polynomial", n, SMIN, SMAX, append_zero=zero), afs) == k


def test_afs_step_and_history():
    """AFS is one step with d = x / sqrt(1 + s0^2). afs_history=True (SFD's sampler, the SFD host's default) puts its
    estimate x - s0 d into the multistep history, exactly as a denoiser that returned it at s0 would;
    afs_history=False (bdense 0.1, `--teacher-history restart`) restarts the history after it."""
    den = GaussianDenoiser()
    x = den.sample_prior(2, SMAX)
    s0, s1 = 80.0, 30.0
    assert torch.allclose(afs_step(x, s0, s1), x + (s1 - s0) * x / math.sqrt(1 + s0 ** 2), rtol=1e-14, atol=1e-12)
    assert torch.equal(solve_euler(den, x, torch.tensor([s0, s1]), afs=True), afs_step(x, s0, s1)) and den.calls == 0

    def afs_at_start(z, sigma, label=None):  # the AFS estimate at the first grid point, the network elsewhere
        if float(sigma[0]) == SMAX:
            return (z - SMAX * (z / math.sqrt(1 + SMAX ** 2))).unsqueeze(1)
        return den(z, sigma, label)

    for steps in (6, 14):  # both below and above dpm-solver's lower_order_final threshold for the sub-grid too
        sig = get_sigmas("polynomial", steps + 1, SMIN, SMAX)
        for name in ("dpmpp_2m", "dpmpp_3m"):
            cut = solve(name, den, afs_step(x, sig[0], sig[1]), sig[1:], order_rule="tail")
            assert (solve(name, den, x, sig, afs=True, order_rule="tail") - cut).abs().max() < 1e-12
            for rule in ("sfd", "dpm-solver"):
                restart = solve(name, den, x, sig, afs=True, order_rule=rule)
                kept = solve(name, den, x, sig, afs=True, afs_history=True, order_rule=rule)
                assert torch.equal(kept, solve(name, afs_at_start, x, sig, order_rule=rule))
                assert (kept - restart).abs().max() > 1e-6  # the history changes the second step's order


def test_last_branch_only():
    den = GaussianDenoiser()

    def three(x, sigma, label=None):
        d = den(x, sigma, label)[:, 0]
        return torch.stack([d + 100.0, -d, d], dim=1)

    x = den.sample_prior(2, SMAX)
    sig = get_sigmas("polynomial", 5, SMIN, SMAX, append_zero=True)
    for name in SOLVERS:
        assert torch.equal(solve(name, three, x, sig), solve(name, den, x, sig))


def test_dtype_autograd_and_errors():
    den = GaussianDenoiser()
    x = den.sample_prior(2, SMAX).float().requires_grad_()
    out = solve("heun", den, x, get_sigmas("polynomial", 4, SMIN, SMAX))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(BdenseError, match="euler"):
        solve("rk4", den, x, get_sigmas("polynomial", 4, SMIN, SMAX))
    with pytest.raises(BdenseError):
        solve("euler", den, x, torch.tensor([1.0, 2.0]))
    with pytest.raises(BdenseError):
        get_sigmas("cosine", 4, SMIN, SMAX)


def test_schedules():
    for sched in ("polynomial", "logsnr", "time-uniform"):
        s = get_sigmas(sched, 9, SMIN, SMAX, append_zero=True)
        assert s.dtype == torch.float64 and len(s) == 10 and s[-1] == 0
        assert s[0] == SMAX and s[-2] == SMIN and (s[1:] < s[:-1]).all()
    ls = get_sigmas("logsnr", 9, SMIN, SMAX).log()
    assert torch.allclose(ls[1:] - ls[:-1], (ls[1] - ls[0]).expand(8))
    p = polynomial_sigmas(5, SMIN, SMAX, rho=7.0)
    i = torch.arange(5, dtype=torch.float64) / 4
    assert torch.allclose(p, (SMAX ** (1 / 7) + i * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7)
    student, teacher = nested_polynomial_grids(5, 3, 0.006, SMAX, 7.0)
    assert len(teacher) == 13 and torch.equal(teacher[::3], student)
    assert student[0] == teacher[0] == SMAX and student[-1] == teacher[-1] == 0.006
    tu = time_uniform_sigmas(6, SMIN, SMAX)
    assert tu[0] == SMAX and tu[-1] == SMIN
    assert torch.allclose(cosine_t(tu, SMIN, SMAX), torch.linspace(1, 0, 6, dtype=torch.float64))
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(cosine_t(cosine_sigma(t)), t, atol=1e-12)
    assert abs(cosine_t(cosine_sigma(0.3)) - 0.3) < 1e-12 and abs(cosine_sigma(1.0) - math.exp(10)) < 1e-6
