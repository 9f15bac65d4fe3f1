"""Seeds: image i depends only on seed i, whatever the batch size or device."""
from __future__ import annotations

import torch

from .errors import BdenseError


SEED_MAX = 2**63 - 1
MAX_SEEDS = 1_000_000  # per command: more only exhausts memory; split the work


def parse_seeds(spec: str | int | list[int], flag: str = "--seeds") -> list[int]:
    """'0-9,20,30-31' -> [0..9, 20, 30, 31]; an int n means range(n). At most MAX_SEEDS seeds in 0..2^63-1."""
    if isinstance(spec, int):
        if spec < 1:
            raise BdenseError(f"{flag}: need at least one seed, got {spec}")
        spec = f"0-{spec - 1}"
    if isinstance(spec, list):
        spec = ",".join(str(s) for s in spec)
    parts, count = [], 0
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise BdenseError(f"seed range '{part}' runs backwards; write it as {hi_i}-{lo_i}")
            else:
                lo_i = hi_i = int(part)
        except ValueError:
            raise BdenseError(f"cannot read {flag} '{spec}'; use forms like 0-99 or 0,5,7-9") from None
        if lo_i < 0 or hi_i > SEED_MAX:
            raise BdenseError(f"{flag} '{spec}': seeds must lie in 0..{SEED_MAX} (2^63-1)")
        count += hi_i - lo_i + 1
        if count > MAX_SEEDS:
            raise BdenseError(f"{flag} '{spec}' names more than {MAX_SEEDS:,} seeds; split the work into several runs")
        parts.append((lo_i, hi_i))
    return [s for lo, hi in parts for s in range(lo, hi + 1)]


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
