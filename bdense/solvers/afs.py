"""SFD's analytical first step (AFS): replaces the first network call by d = x / sqrt(1 + s0^2)."""
import math


def afs_step(x, s0, s1):
    """x1 = x + (s1 - s0) * d with d = x / sqrt(1 + s0^2); no network evaluation."""
    s0, s1 = float(s0), float(s1)
    return x + (s1 - s0) * (x / math.sqrt(1.0 + s0 * s0))


def afs_estimate(x, s0):
    """The x0 estimate AFS implies, x - s0 * d: what SFD's multistep sampler puts into its history."""
    s0 = float(s0)
    return x - s0 * (x / math.sqrt(1.0 + s0 * s0))
