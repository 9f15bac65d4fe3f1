"""Solver overhead: teacher trajectories and student sampling against the same number of bare network calls.

Why: in SFD the teacher rollout is most of an iteration's cost, and a few-step student is only worth its NFE
if sampling costs what its network calls cost. Everything the solver adds on top of the network (seeded noise,
update arithmetic, history, the stacked trajectory, the copy back to the host) is overhead; this measures it.
  * teacher: SFD NFE 2 plan (13-point teacher grid) with dpmpp_3m (12 NFE), euler (12 NFE) and heun (24 NFE),
    as `solve(..., return_trajectory=True)` on a ready x and as `teacher_trajectories` (seeded noise included),
    vs that many bare denoiser forwards at the same batch;
  * student: the student recipe (Euler + AFS on its own grid) at NFE 1, 2, 4, as `solve` and as
    `sampling.generate` (seeded noise, clamp, copy to CPU), vs NFE bare forwards.
All rows are timed interleaved in one process; ratios are medians of per-round ratios.

    .venv/bin/python benchmarks/bench_solver.py                         # CPU, digits preset 8x8, batch 128
    python3 benchmarks/bench_solver.py --device cuda --preset mnist --resolution 28 --batch 128
"""
from __future__ import annotations

import time

import torch

from common import (autocast, describe_machine, interleaved, is_cuda, make_teacher, med, paired_ratio, parser, setup,
                    spread, sync, table)


def bare(model, x, sigmas, n, ctx):
    """n denoiser forwards on x at the given sigmas (cycled), nothing else."""
    def run():
        with torch.no_grad(), ctx():
            for i in range(n):
                model(x, sigmas[i % len(sigmas)])
    return run


class NetClock:
    """The model, plus the time spent inside its forward calls (device drained around each call)."""

    def __init__(self, model, device):
        self.model, self.device, self.t = model, device, 0.0

    def __getattr__(self, name):
        return getattr(self.__dict__["model"], name)

    def __call__(self, *a, **kw):
        sync(self.device)
        t0 = time.perf_counter()
        out = self.model(*a, **kw)
        sync(self.device)
        self.t += time.perf_counter() - t0
        return out


def self_timed(run, clock, device, sink: list):
    """Call run(); append total time / time inside the network: overhead measured within one execution,
    immune to the machine drifting between the A and B calls (the paired ratios are not)."""
    def fn():
        clock.t = 0.0
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        sink.append((time.perf_counter() - t0) / clock.t)
    return fn


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--solvers", default="dpmpp_3m,heun,euler")
    p.add_argument("--student-nfe", default="1,2,4")
    args = p.parse_args()
    setup(args)
    describe_machine(args)
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.run import sfd_student_recipe
    from bdense.distill.sfd.trajectories import teacher_trajectories
    from bdense.models.branches import widen
    from bdense.sampling.recipe import Recipe
    from bdense.sampling.sample import generate
    from bdense.seeds import seed_noise
    from bdense.solvers import nfe, solve

    dev = args.device
    teacher = make_teacher(args).to(dev)
    student = widen(teacher, 1).eval()  # a deployed (exported) student costs what a K=1 model costs
    seeds = list(range(args.batch))
    shape = (args.channels, args.resolution, args.resolution)
    x0 = seed_noise(seeds, shape, dev)

    def ctx():
        return autocast(dev, args.precision)

    def sig_vecs(grid):
        return [torch.full((args.batch,), float(s), device=dev) for s in grid]

    fns, teacher_rows, student_rows = {}, [], []
    tclock, sclock = NetClock(teacher, dev), NetClock(student, dev)
    own = {name: [] for name in args.solvers.split(",")} | {int(k): [] for k in args.student_nfe.split(",")}
    for name in args.solvers.split(","):
        plan = SFDPlan(nfe=2, teacher_solver=name)
        grid = plan.grids()[1]
        n = nfe(name, grid)
        x = x0 * float(grid[0])
        fns.setdefault(f"bare teacher x{n}", bare(teacher, x, sig_vecs(grid[:-1]), n, ctx))

        def run_solve(name=name, grid=grid, x=x):
            with torch.no_grad(), ctx():
                solve(name, teacher, x, grid, return_trajectory=True)

        def run_traj(plan=plan, model=teacher):
            teacher_trajectories(model, plan, seeds, dev, autocast=ctx())
        fns[f"{name} solve"], fns[f"{name} traj"] = run_solve, run_traj
        fns[f"{name} traj self"] = self_timed(lambda r=run_traj: r(model=tclock), tclock, dev, own[name])
        teacher_rows.append((name, n))
    for k in [int(v) for v in args.student_nfe.split(",")]:
        recipe = Recipe(**sfd_student_recipe(SFDPlan(nfe=k)))
        grid = recipe.sigmas()
        x = x0 * float(grid[0])
        fns[f"bare student x{k}"] = bare(student, x, sig_vecs(grid[1:-1]), k, ctx)

        def run_ssolve(grid=grid, x=x):
            with torch.no_grad(), ctx():
                solve("euler", student, x, grid, afs=True)

        def run_gen(recipe=recipe, model=student):
            with ctx():
                for _ in generate(model, seeds, recipe, batch_size=args.batch, device=dev):
                    pass
        fns[f"student{k} solve"], fns[f"student{k} generate"] = run_ssolve, run_gen
        fns[f"student{k} generate self"] = self_timed(lambda r=run_gen: r(model=sclock), sclock, dev, own[k])
        student_rows.append(k)

    t, c = interleaved(fns, dev, args.repeats, args.warmup)

    def cpu_ratio(a, b):
        return "-" if is_cuda(dev) else f"{paired_ratio(c[a], c[b]):.3f}"
    rows = []
    for name, n in teacher_rows:
        kb, ks, kt = f"bare teacher x{n}", f"{name} solve", f"{name} traj"
        b, s, tr = t[kb], t[ks], t[kt]
        rows.append([name, n, f"{1e3 * med(b):.1f}", spread(b), f"{1e3 * med(s):.1f}", f"{paired_ratio(s, b):.3f}",
                     f"{1e3 * med(tr):.1f}", spread(tr), f"{paired_ratio(tr, b):.3f}", cpu_ratio(kt, kb),
                     f"{med(own[name][args.warmup:]):.3f}", f"{args.batch / med(tr):.0f}"])
    table(f"Teacher trajectories (SFD NFE 2 grid) vs bare forwards, batch {args.batch}, wall ms (medians)",
          ["solver", "NFE", "bare", "spread", "solve", "solve/bare", "teacher_trajectories", "spread",
           "traj/bare", "traj/bare CPU time", "traj/in-network (self-timed)", "traj img/s"], rows)
    rows = []
    for k in student_rows:
        kb, ks, kg = f"bare student x{k}", f"student{k} solve", f"student{k} generate"
        b, s, g = t[kb], t[ks], t[kg]
        rows.append([k, f"{1e3 * med(b):.1f}", spread(b), f"{1e3 * med(s):.1f}", f"{paired_ratio(s, b):.3f}",
                     f"{1e3 * med(g):.1f}", spread(g), f"{paired_ratio(g, b):.3f}", cpu_ratio(kg, kb),
                     f"{med(own[k][args.warmup:]):.3f}", f"{args.batch / med(b):.0f}", f"{args.batch / med(g):.0f}"])
    table(f"Student sampling (Euler + AFS) vs NFE bare forwards, batch {args.batch}, wall ms (medians)",
          ["NFE", "bare", "spread", "solve", "solve/bare", "generate", "spread", "generate/bare",
           "generate/bare CPU time", "generate/in-network (self-timed)", "bare img/s", "generate img/s"], rows)


if __name__ == "__main__":
    main()
