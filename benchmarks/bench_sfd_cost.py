"""Where the time of a short SFD run goes: producing targets (teacher or cache), the student, everything else.

Why: SFD's cost is dominated by the teacher rollout; the trajectory cache exists so that second and later runs
(other K, other seeds, other branch weights) skip it. This runs the real `distill_sfd` (the `bdense distill`
code path: load, Trainer, checkpoint, final save, sample grid) and splits its wall time with perf_counter:
  * targets: SFDTask.targets() - the teacher rollout without a cache, the cache read with one;
  * student: the rest of SFDTask.train_step() - forward, K-branch loss, backward, Adam, for each interval;
  * other: setup before the first iteration, loop overhead between iterations, and the finish after the last.
The timing is a subclass of SFDTask put in place of the library's for the run (no library code changes).
Runs: without cache (seed 0), then on one cache written once: seed 0 (cache order) and seed 1 (a seeded
permutation of the pool, as a second training seed reads it). Rounds of all runs are interleaved.
With --extrapolate N it also prints the steady-state time per iteration scaled to N trajectories.

    .venv/bin/python benchmarks/bench_sfd_cost.py                      # CPU, digits 8x8, batch 128, 1024 trajectories
    python3 benchmarks/bench_sfd_cost.py --device cuda --preset ddpm-cifar10 --channels 3 --resolution 32 \
        --runs nocache --branches 1,4 --trajectories 1536 --extrapolate 200000 --precisions fp32,bf16
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

from common import describe_machine, make_teacher, med, parser, setup, sync, table

from bdense.distill.sfd import run as run_mod
from bdense.distill.sfd.task import SFDTask


class TimedSFDTask(SFDTask):
    """SFDTask with perf_counter around targets() and train_step(); the device drained at each boundary."""

    rec: dict = {}

    def targets(self, tr, step):
        sync(tr.device)
        t0 = time.perf_counter()
        out = super().targets(tr, step)
        sync(tr.device)
        self.rec["targets"].append(time.perf_counter() - t0)
        return out

    def train_step(self, tr, step):
        sync(tr.device)
        t0 = time.perf_counter()
        self.rec.setdefault("first_start", t0)
        if step == self.rec["first_step"] + self.rec["steady_from"]:
            self.rec["second_start"] = t0
        if step == self.rec["first_step"] + 1:
            self.rec["first_iter"] = t0 - self.rec["first_start"]
        out = super().train_step(tr, step)
        sync(tr.device)
        self.rec["last_end"] = time.perf_counter()
        self.rec["steps"].append(self.rec["last_end"] - t0)
        return out


def one_run(args, teacher_path, k, cache, seed, tmp, tag):
    factor = max(1, args.teacher_batch // args.batch) if cache is None else 1
    rec = {"targets": [], "steps": [], "first_step": 0, "steady_from": factor}
    TimedSFDTask.rec = rec
    out = Path(tmp) / f"run-{tag}-{time.perf_counter_ns()}"
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        run_mod.distill_sfd(str(teacher_path), str(out), nfe=args.nfe, branches=k, trajectories=args.trajectories,
                            batch=args.batch, precision=args.precision, seed=seed, device=args.device, progress=False,
                            trajectory_cache=cache, compile_teacher=args.compile in ("teacher", "both"),
                            compile_student=args.compile in ("student", "both"), compile_mode=args.compile_mode,
                            teacher_batch=args.teacher_batch if cache is None else 0)
    sync(args.device)
    wall = time.perf_counter() - t0
    steps, targets = sum(rec["steps"]), sum(rec["targets"])
    setup_s, finish_s = rec["first_start"] - t0, t0 + wall - rec["last_end"]
    n = len(rec["steps"])
    f = rec["steady_from"]
    steady = (rec["last_end"] - rec["second_start"]) / (n - f) if n > f else rec["steps"][0]
    tail = rec["targets"][f:] or rec["targets"]
    return dict(wall=wall, targets=targets, student=steps - targets, other=wall - steps, setup=setup_s,
                finish=finish_s, loop=wall - steps - setup_s - finish_s, steady=steady,
                steady_targets=sum(tail) / len(tail), first=rec.get("first_iter", rec["steps"][0]))


def main() -> None:
    p = parser(__doc__, repeats=2)
    p.add_argument("--nfe", type=int, default=2)
    p.add_argument("--branches", default="4", help="comma list of K to run")
    p.add_argument("--trajectories", type=int, default=1024, help="per run (iterations = this / batch)")
    p.add_argument("--runs", default="nocache,cache,cache-seed1", help="subset of nocache,cache,cache-seed1")
    p.add_argument("--shard-size", type=int, default=0,
                   help="cache shard size (0: 2 x batch, so the pool spans several shards as a real cache does)")
    p.add_argument("--extrapolate", type=int, default=0, help="also print minutes for this many trajectories")
    p.add_argument("--precisions", default="", help="comma list (fp32,bf16) run in this one process; default --precision")
    p.add_argument("--compile", default="none", choices=["none", "teacher", "student", "both"],
                   help="torch.compile these networks (the first iteration's time, compile included, is reported)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default, reduce-overhead, max-autotune)")
    p.add_argument("--teacher-batch", type=int, default=0,
                   help="teacher rollout batch (a multiple of --batch; 0: --batch); steady state counted from the "
                        "second rollout on")
    args = p.parse_args()
    setup(args)
    describe_machine(args)
    run_mod.SFDTask = TimedSFDTask  # distill_sfd builds its task by this name
    from bdense.distill.sfd.cache import write_cache
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.models.checkpoint import save_model

    runs = args.runs.split(",")
    ks = [int(v) for v in args.branches.split(",")]
    results, notes = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = make_teacher(args)
        teacher_path = save_model(Path(tmp) / "teacher.safetensors", teacher)
        cache = None
        if any(r.startswith("cache") for r in runs):
            cache = Path(tmp) / "cache"
            plan = SFDPlan(nfe=args.nfe, sigma_max=min(80.0, teacher.sigma_max))
            shard = args.shard_size or 2 * args.batch
            sync(args.device)
            t0 = time.perf_counter()
            write_cache(teacher.to(args.device), run_mod.file_digest(teacher_path), plan, args.trajectories, cache,
                        batch=args.batch, shard_size=shard, device=args.device, progress=False)
            sync(args.device)
            notes.append(f"cache: {args.trajectories} trajectories in shards of {shard}, fp32, written once in "
                         f"{time.perf_counter() - t0:.2f} s (teacher fp32, not timed below)")
            mb = shard * len(plan.grids()[1]) * args.channels * args.resolution ** 2 * 4 / 2**20
            steps = args.trajectories // args.batch
            notes.append("whole-shard loads per iteration (TrajectoryCache keeps one shard in memory): " + ", ".join(
                f"seed {sd}: {shard_loads(sd, steps, args.batch, shard):.1f}" for sd in (0, 1))
                + f" ({mb:.1f} MiB per shard)")
        precs = [argparse_copy(args, precision=pr) for pr in (args.precisions or args.precision).split(",")]
        for a in precs:
            for _ in range(args.warmup):  # one short untimed run per precision: imports, allocator, kernels
                one_run(argparse_copy(a, trajectories=a.batch), teacher_path, ks[0], None, 0, tmp, "warmup")
        for _ in range(args.repeats):
            for a in precs:
                for k in ks:
                    for r in runs:
                        src = None if r == "nocache" else str(cache)
                        res = one_run(a, teacher_path, k, src, 1 if r == "cache-seed1" else 0, tmp, f"{k}-{r}")
                        results.setdefault((a.precision, k, r), []).append(res)
                        print(f"  {a.precision} {r} K={k}: wall {res['wall']:.2f} s, targets {res['targets']:.2f} s, "
                              f"student {res['student']:.2f} s, steady {1e3 * res['steady']:.1f} ms/iter", flush=True)
    steps = args.trajectories // args.batch
    rows = []
    for (prec, k, r), rs in results.items():
        m = {key: med([x[key] for x in rs]) for key in rs[0]}
        share = lambda v: f"{v:.2f} ({100 * v / m['wall']:.0f}%)"  # noqa: E731
        row = [prec, r, k, f"{m['wall']:.2f}", share(m["targets"]), share(m["student"]), share(m["other"]),
               f"{m['setup']:.2f} / {m['loop']:.2f} / {m['finish']:.2f}", f"{1e3 * m['steady']:.1f}",
               f"{1e3 * m['steady_targets']:.1f}", f"{m['first']:.1f}"]
        if args.extrapolate:
            row.append(f"{m['steady'] * args.extrapolate / args.batch / 60:.1f}")
        rows.append(row)
    headers = ["precision", "run", "K", "wall s", "targets s (%)", "student s (%)", "other s (%)", "other: setup / loop / finish",
               "ms/iter steady", "targets ms/iter", "first iter s (compile)"]
    if args.extrapolate:
        headers.append(f"min for {args.extrapolate} traj")
    table(f"Short SFD NFE {args.nfe} run, {steps} iterations x batch {args.batch}, compile {args.compile}"
          f"{' (' + args.compile_mode + ')' if args.compile_mode else ''}, teacher batch "
          f"{args.teacher_batch or args.batch} "
          f"(medians of {args.repeats} interleaved rounds)", headers, rows)
    for line in notes:
        print(line)


def shard_loads(seed, steps, batch, shard) -> float:
    """Shard reads per iteration a TrajectoryCache does for a run's seed order (it reloads on every shard change)."""
    from bdense.distill.sfd.trajectories import trajectory_seeds
    last, loads = None, 0
    for st in range(steps):
        for s in trajectory_seeds(seed, st, batch, steps * batch):
            loads += s // shard != last
            last = s // shard
    return loads / steps


def argparse_copy(args, **kw):
    import argparse
    return argparse.Namespace(**{**vars(args), **kw})


if __name__ == "__main__":
    main()
