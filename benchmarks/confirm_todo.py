"""Which training seeds of one NFE of a confirmation cell still lack a committed result: the seed shards a sitting
(a GPU window, a CPU session) should run next. Prints their 0-based indices (compare --only-seeds), space-separated.

    python benchmarks/confirm_todo.py benchmarks/confirm-results/sfd-28-gpu --nfe 2 --seeds 5 --seed-block 1

A seed counts as done when every setting of a part (results.json or parts/*.json, any shard) holds a run of it at
that NFE. Nothing under the folder yet: every index.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bdense.seeds import SeedBlock  # noqa: E402
from bdense.studies.union import union_results  # noqa: E402


def todo(folder: Path, nfe: int, seeds: int, block: int) -> list[int]:
    """0-based indices of the block's first `seeds` training seeds that have no finished run in every setting."""
    runs = {}
    if folder.is_dir() and ((folder / "results.json").exists() or any((folder / "parts").glob("*.json"))):
        runs = union_results(folder).get("nfe", {}).get(str(nfe), {}).get("runs", {})
    done = set.intersection(*(set(map(int, r)) for r in runs.values())) if runs else set()
    return [i for i, s in enumerate(SeedBlock(block).run_seeds(seeds)) if s not in done]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a cell's committed results (benchmarks/confirm-results/CELL)")
    p.add_argument("--nfe", type=int, required=True)
    p.add_argument("--seeds", type=int, required=True, help="the cell's training seeds (the plan's count)")
    p.add_argument("--seed-block", type=int, default=1, help="the cell's seed block (the plan's SFD block: 1)")
    a = p.parse_args()
    print(" ".join(map(str, todo(a.folder, a.nfe, a.seeds, a.seed_block))))


if __name__ == "__main__":
    main()
