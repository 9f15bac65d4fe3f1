"""Which step counts an SFD-v run trains, and which one each iteration draws (torch-free: options.py reads it).

The count sequence is a pure function of (counts, training seed, iterations, draw rule), so a resumed run draws the
same counts:
  balanced  every block of len(counts) iterations holds each count once, in a seeded order (our default: every
            count gets the same number of trajectories, which is what a per-NFE baseline is compared at)
  iid       each iteration draws a count uniformly and independently (sfd-main: random.randint each iteration)
"""
from __future__ import annotations

import random
import re

from ...errors import BdenseError

DRAWS = ("balanced", "iid")


def parse_counts(text) -> tuple:
    """'2-5' | '2,3,5' | '3' | an int | a sequence -> sorted distinct NFE in 1..8."""
    if isinstance(text, int) and not isinstance(text, bool):
        items = [text]
    elif isinstance(text, (tuple, list)):
        items = list(text)
    else:
        t = str(text).replace(" ", "")
        m = re.fullmatch(r"(\d{1,3})-(\d{1,3})", t)
        try:
            items = list(range(int(m[1]), int(m[2]) + 1)) if m else [int(x) for x in t.split(",")]
        except ValueError:
            items = []
        if m and int(m[1]) >= int(m[2]):
            raise BdenseError(f"--nfe '{text}' runs backwards or holds one count; write A-B with A < B, e.g. 2-5")
    if not items or len(set(items)) != len(items) or any(isinstance(n, bool) or not isinstance(n, int)
                                                         or not 1 <= n <= 8 for n in items):
        raise BdenseError(f"--nfe '{text}' must be an NFE from 1 to 8, a range like 2-5 or a list like 2,3,5 "
                          f"(distinct)")
    return tuple(sorted(items))


def nfe_schedule(counts: tuple, seed: int, steps: int, draw: str = "balanced") -> list[tuple[int, int]]:
    """(count, k) per iteration: the count drawn and how many earlier iterations drew it."""
    if draw not in DRAWS:
        raise BdenseError(f"unknown --nfe-draw '{draw}'; use {' or '.join(DRAWS)}")
    m, drawn = len(counts), []
    if draw == "balanced":
        for block in range(-(-steps // m)):
            drawn += random.Random(f"bdense-nfe:{seed}:{block}").sample(list(counts), m)
    else:
        drawn = [random.Random(f"bdense-nfe:{seed}:{i}").choice(counts) for i in range(steps)]
    seen = dict.fromkeys(counts, 0)
    out = []
    for n in drawn[:steps]:
        out.append((n, seen[n]))
        seen[n] += 1
    missing = [n for n in counts if not seen[n]]
    if missing:
        raise BdenseError(f"{steps} iterations never draw NFE {','.join(map(str, missing))}; raise --trajectories "
                          f"to at least {len(counts)} batches")
    return out


def iterations_per_count(schedule) -> dict:
    per = {}
    for n, _ in schedule:
        per[n] = per.get(n, 0) + 1
    return dict(sorted(per.items()))
