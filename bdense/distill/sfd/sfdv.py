"""SFD-v: one student for several NFE. Each iteration draws one step count (bdense/distill/sfd/counts.py) and trains
exactly as SFD at that count: that count's plan (nested grids, AFS, M + 1 teacher sub-steps), K branches, one
optimizer step per interval, and the student told the count (bdense/models/nfe_embedding.py).

Count n's k-th iteration takes the k-th batch of count n's own trajectory pool, noise seeds first..first+P_n-1 in
the training seed's order, the same seeds a per-NFE student of P_n trajectories uses: one per-NFE cache serves both.
The checkpoint records the counts drawn so far and a resume checks them against the schedule.
"""
from __future__ import annotations

from ...errors import BdenseError
from .counts import iterations_per_count, nfe_schedule, parse_counts  # noqa: F401 (re-exported)
from .plan import SFDPlan
from .task import SFDTask


def plans_for(counts, **plan_kw) -> dict:
    """One SFDPlan per count: its own nested student and teacher grids (SFD's), the same K and sub-steps."""
    return {n: SFDPlan(nfe=n, **plan_kw) for n in counts}


def open_caches(path, plans: dict, teacher_digest: str, first_seed: int, pools: dict) -> dict:
    """PATH/nfeN for every count (as `bdense trajectories --nfe A-B` writes them), each checked like one cache."""
    from pathlib import Path

    from .cache import TrajectoryCache
    out = {}
    for n, plan in plans.items():
        sub = Path(path) / f"nfe{n}"
        if not (sub / "manifest.json").exists():
            raise BdenseError(f"{path} holds no cache for NFE {n} ({sub}); write them with bdense trajectories "
                              f"--nfe {min(plans)}-{max(plans)} --out {path}")
        c = TrajectoryCache.open(sub, teacher_digest=teacher_digest, plan=plan)
        if c.first_seed != first_seed:
            raise BdenseError(f"the cache {sub} starts at noise seed {c.first_seed}, the run at {first_seed}; use a "
                              f"cache written with --first-seed {first_seed}")
        if c.size < pools[n]:
            raise BdenseError(f"the cache {sub} holds {c.size} trajectories but NFE {n} needs {pools[n]}; lower "
                              f"--trajectories or make larger caches")
        out[n] = c
    return out


class SFDvTask(SFDTask):
    """SFDTask whose plan, grids, trajectory pool and student count change with the count drawn each iteration."""
    name = "sfd-v"

    def __init__(self, teacher, student, plans: dict, schedule: list, weights, batch: int, seed: int,
                 sources: dict | None = None, targets: str = "anchored-log", first_seed: int = 0,
                 dense_intervals: int | None = None):
        first = min(plans)
        pools = {n: c * batch for n, c in iterations_per_count(schedule).items()}
        super().__init__(teacher, student, plans[first], weights, batch, seed, pool=pools[first], targets=targets,
                         first_seed=first_seed, dense_intervals=dense_intervals)
        self.plans, self.schedule, self.pools = plans, schedule, pools
        self.sources = sources or {}
        self.grids = {n: tuple(g.tolist() for g in p.grids()) for n, p in plans.items()}
        self.drawn: list[int] = []  # counts drawn so far (checkpointed: a resume checks them against the schedule)

    def train_step(self, tr, step):
        n, k = self.schedule[step]
        self.plan, self.pool, self.source = self.plans[n], self.pools[n], self.sources.get(n)
        self.t_student, self.t_teacher = self.grids[n]
        self.net_kwargs = {"nfe": n} if getattr(self.model, "nfe_counts", ()) else {}
        metrics = self.walk(tr, step, k)
        self.drawn.append(n)
        metrics["nfe"] = float(n)
        return metrics

    def extra_state(self):
        return {}, {"nfe_drawn": list(self.drawn)}

    def load_extra_state(self, tensors, meta):
        drawn = list(meta.get("nfe_drawn", []))
        if drawn != [n for n, _ in self.schedule[:len(drawn)]]:
            raise BdenseError("the checkpoint drew another NFE sequence than this run would; resume it with the "
                              "bdense version and options that started it, or start a new --out")
        self.drawn = drawn
