"""Sigma grids (EDM polynomial, log-SNR uniform, cosine time-uniform) and SFD's nested student/teacher grids."""
import math

import torch

from bdense.errors import BdenseError

SCHEDULES = ("polynomial", "logsnr", "time-uniform")


def _check(n, sigma_min, sigma_max):
    if n < 1 or not 0 < sigma_min < sigma_max:
        raise BdenseError(f"need n >= 1 and 0 < sigma_min < sigma_max, got n={n}, [{sigma_min}, {sigma_max}]")


def _pin(x, sigma_min, sigma_max):
    x[0] = sigma_max
    if len(x) > 1:
        x[-1] = sigma_min
    return x


def polynomial_sigmas(n, sigma_min, sigma_max, rho=7.0):
    """EDM/Karras grid (float64, descending, exact endpoints)."""
    _check(n, sigma_min, sigma_max)
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return _pin((hi + i * (lo - hi)) ** rho, sigma_min, sigma_max)


def logsnr_sigmas(n, sigma_min, sigma_max):
    """Uniform in log sigma (float64, descending)."""
    _check(n, sigma_min, sigma_max)
    return _pin(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp(),
                sigma_min, sigma_max)


def _ab(sigma_min, sigma_max):
    b = math.atan(sigma_min)
    return math.atan(sigma_max) - b, b


def cosine_sigma(t, sigma_min=math.exp(-10), sigma_max=math.exp(10)):
    """VP cosine schedule as EDM sigma: sigma(t) = tan(a t + b), sigma(0) = sigma_min, sigma(1) = sigma_max."""
    a, b = _ab(sigma_min, sigma_max)
    return torch.tan(a * t + b) if torch.is_tensor(t) else math.tan(a * t + b)


def cosine_t(sigma, sigma_min=math.exp(-10), sigma_max=math.exp(10)):
    """Inverse of cosine_sigma."""
    a, b = _ab(sigma_min, sigma_max)
    return (torch.atan(sigma) - b) / a if torch.is_tensor(sigma) else (math.atan(sigma) - b) / a


def time_uniform_sigmas(n, sigma_min, sigma_max):
    """Uniform in t (1 -> 0) for the cosine schedule clipped to [sigma_min, sigma_max]."""
    _check(n, sigma_min, sigma_max)
    t = torch.linspace(1.0, 0.0, n, dtype=torch.float64)
    return _pin(cosine_sigma(t, sigma_min, sigma_max), sigma_min, sigma_max)


def get_sigmas(schedule, n, sigma_min, sigma_max, rho=7.0, append_zero=False):
    """n schedule points (float64), plus a final 0 when append_zero."""
    if schedule == "polynomial":
        s = polynomial_sigmas(n, sigma_min, sigma_max, rho)
    elif schedule == "logsnr":
        s = logsnr_sigmas(n, sigma_min, sigma_max)
    elif schedule == "time-uniform":
        s = time_uniform_sigmas(n, sigma_min, sigma_max)
    else:
        raise BdenseError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    return torch.cat([s, s.new_zeros(1)]) if append_zero else s


def nested_polynomial_grids(n_student, k, sigma_min, sigma_max, rho=7.0):
    """SFD grids: teacher has k*(n_student-1)+1 polynomial points and student == teacher[::k] bit-exactly."""
    if n_student < 2 or k < 1:
        raise BdenseError(f"need n_student >= 2 and k >= 1, got {n_student}, {k}")
    teacher = polynomial_sigmas(k * (n_student - 1) + 1, sigma_min, sigma_max, rho)
    student = teacher[::k].clone()
    assert torch.equal(student, teacher[::k]) and len(student) == n_student
    return student, teacher
