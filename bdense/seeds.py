"""Seeds: image i depends only on seed i, whatever the batch size or device."""
from __future__ import annotations

from dataclasses import dataclass

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


def format_seeds(seeds: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8': the inverse of parse_seeds, for plans and reports."""
    parts, run = [], []
    for s in sorted(seeds):
        if run and s != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(s)
    parts += [run] if run else []
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in parts)


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


# -- seed blocks: every source of randomness of a study, moved together to a range never used before ----------------
BLOCK_STRIDE = 10**13  # noise seeds of block N live in [N * BLOCK_STRIDE, (N + 1) * BLOCK_STRIDE)
EVAL_OFFSET = 10**12  # a block's held-out evaluation noise seeds start here (block 0: the evaluation seeds of old)
TUNE_OFFSET = EVAL_OFFSET + 10**9  # a block's tuning noise seeds start here; its training trajectories lie below EVAL
RUN_SEEDS_PER_BLOCK = 1000  # training seeds (init, data order, dropout) of block N: N * 1000 + i
MAX_SEED_BLOCK = 100_000  # keeps every noise seed below 2^63 - 1


@dataclass(frozen=True)
class SeedBlock:
    """Where a study's training trajectories, training seeds, evaluation and tuning seeds come from.

    Why: a confirmation must not reuse the randomness that chose the setting it confirms. Block 0 is the layout
    bdense always used (training seeds 0.., trajectories from noise seed 0, evaluation seeds from 10^12, tuning seeds
    from 10^12 + 10^9), bit for bit; block N moves all of them by N blocks, so blocks never overlap."""
    index: int = 0

    def __post_init__(self):
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index <= MAX_SEED_BLOCK:
            raise BdenseError(f"--seed-block must be an integer from 0 to {MAX_SEED_BLOCK}, got {self.index!r}")

    @property
    def base(self) -> int:
        return self.index * BLOCK_STRIDE

    def run_seeds(self, n: int) -> list[int]:
        """The training seeds of n runs (run directory names and results keys: seed{s})."""
        return [self.index * RUN_SEEDS_PER_BLOCK + i for i in range(n)]

    def first_trajectory(self, run_seed: int, pool: int, fresh: bool) -> int:
        """First noise seed of a run's trajectory pool: the block's shared pool, or the run's own (fresh)."""
        return self.base + ((run_seed - self.index * RUN_SEEDS_PER_BLOCK) * pool if fresh else 0)

    def eval_seeds(self, n: int) -> list[int]:
        return list(range(self.base + EVAL_OFFSET, self.base + EVAL_OFFSET + n))

    def tune_seeds(self, n: int) -> list[int]:
        return list(range(self.base + TUNE_OFFSET, self.base + TUNE_OFFSET + n))

    def check(self, runs: int, trajectories: int, evals: int, tunes: int = 0) -> None:
        """Refuse a study whose seeds would leave the block (and so overlap another block or another kind)."""
        if runs > RUN_SEEDS_PER_BLOCK:
            raise BdenseError(f"{runs} training seeds exceed the {RUN_SEEDS_PER_BLOCK} of a seed block; use fewer")
        if trajectories > EVAL_OFFSET:
            raise BdenseError(f"{trajectories:,} training trajectories overlap the evaluation seeds of the block "
                              f"(at most {EVAL_OFFSET:,}); lower --trajectories or --seeds")
        if evals > TUNE_OFFSET - EVAL_OFFSET or tunes > BLOCK_STRIDE - TUNE_OFFSET:
            raise BdenseError("the evaluation or tuning seeds overlap the next kind of seed; lower --eval-seeds or "
                              "--tune-seeds")
