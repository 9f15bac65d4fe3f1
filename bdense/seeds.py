"""Seeds: image i depends only on seed i, whatever the batch size or device."""
from __future__ import annotations

import torch

from .errors import BdenseError


def parse_seeds(spec: str | int | list[int]) -> list[int]:
    """'0-9,20,30-31' -> [0..9, 20, 30, 31]; an int n means range(n)."""
    if isinstance(spec, int):
        return list(range(spec))
    if isinstance(spec, list):
        return list(spec)
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise BdenseError(f"seed range '{part}' runs backwards; write it as {hi_i}-{lo_i}")
                out.extend(range(lo_i, hi_i + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise BdenseError(f"cannot read seeds '{spec}'; use forms like 0-99 or 0,5,7-9") from None
    if not out or min(out) < 0:
        raise BdenseError(f"seeds '{spec}' must be non-negative integers; use forms like 0-99")
    return out


def seed_noise(seeds: list[int], shape: tuple[int, ...], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise [len(seeds), *shape]; row i drawn from its own generator seeded with seeds[i]."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype)


def seed_labels(seeds: list[int], num_classes: int, device="cpu") -> torch.Tensor | None:
    """Uniform class labels per seed (independent stream from the noise), None for unconditional models."""
    if not num_classes:
        return None
    labels = [int(torch.randint(num_classes, (1,), generator=torch.Generator().manual_seed(int(s) + 2**40)))
              for s in seeds]
    return torch.tensor(labels, dtype=torch.long, device=device)
