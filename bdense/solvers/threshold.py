"""Dynamic thresholding of x0 estimates, as SFD's DPM-Solver++ teacher applies it before they enter its history.

Per sample: s = max(quantile_p(|x0|), 1), x0 <- clamp(x0, -s, s) / s (p = 0.995). Estimates that stay inside
[-1, 1] pass unchanged; an overshooting one is clipped at its own 99.5% level and scaled back into [-1, 1].
"""
import torch

THRESHOLDS = ("dynamic", "none")


def dynamic_threshold(x0: torch.Tensor, p: float = 0.995) -> torch.Tensor:
    """[B, ...] -> [B, ...]: SFD's per-sample dynamic thresholding (quantile in float32 for half inputs)."""
    flat = x0.abs().flatten(1)
    s = torch.quantile(flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat, p, dim=1)
    s = s.to(x0.dtype).clamp(min=1.0).view(-1, *([1] * (x0.ndim - 1)))
    return torch.minimum(torch.maximum(x0, -s), s) / s


def apply_threshold(x0: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "dynamic":
        return dynamic_threshold(x0)
    if mode != "none":
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {mode!r}")
    return x0
