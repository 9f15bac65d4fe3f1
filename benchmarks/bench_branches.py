"""B-DENSE (K branches) vs baseline (K = 1) SFD training iteration: time per iteration and peak memory.

Why: the method's selling point is that the K-fold wider output head costs next to nothing (the paper says
~0.01%). This measures it in one process, same teacher, batch and seed, interleaving K=1 and K=K rounds:
  * student side: both students fed the SAME precomputed teacher trajectories (forward, K-branch loss,
    backward and Adam step for each trained interval) - what B-DENSE changes;
  * full iteration: the same, with the teacher's rollout inside the iteration, as `bdense distill` runs it.
Peak memory per configuration, as the peak during 3 training iterations above what was held before the student
was built, and in total: on CUDA the allocator's high-water mark, each config built, run and freed in turn in
this process; on CPU the peak RSS of a fresh process per config (RSS cannot be reset).

    .venv/bin/python benchmarks/bench_branches.py                       # CPU, digits preset 8x8, batch 128
    python3 benchmarks/bench_branches.py --device cuda --preset mnist --resolution 28 --batch 128
"""
from __future__ import annotations

import itertools
import json
import sys
import tempfile

from common import (FixedSource, autocast, child_json, describe_machine, interleaved, is_cuda, make_teacher, med,
                    paired_ratio, parser, setup, sfd_trainer, spread, sync, table)

import torch


def current_and_peak_mib(device) -> tuple[float, float]:
    """(memory held now, high-water mark) in MiB: CUDA allocator, or VmRSS / VmHWM of this process."""
    if str(device).startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def rollout(teacher, args, tr):
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.trajectories import teacher_trajectories
    return teacher_trajectories(teacher, SFDPlan(nfe=args.nfe), list(range(args.batch)), tr.device,
                                autocast=tr.autocast())


def child(args) -> None:
    """One configuration in this fresh process: print {"base": MiB before the student, "peak": MiB} as JSON."""
    k, mode = args.child_mem.split(":")
    teacher = make_teacher(args).to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        traj = None
        if mode == "student":  # the shared input, made before the baseline mark
            with torch.no_grad(), autocast(args.device, args.precision):
                from bdense.distill.sfd.plan import SFDPlan
                from bdense.distill.sfd.trajectories import teacher_trajectories
                traj = teacher_trajectories(teacher, SFDPlan(nfe=args.nfe), list(range(args.batch)), args.device)
        sync(args.device)
        base, _ = current_and_peak_mib(args.device)
        if str(args.device).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        task, tr = sfd_trainer(teacher, int(k), args, tmp, FixedSource(*traj) if traj else None, nfe=args.nfe)
        for it in range(3):
            task.train_step(tr, it)
        sync(args.device)
        _, peak = current_and_peak_mib(args.device)
    print(json.dumps({"base": base, "peak": peak}))


def memory_in_process(args, teacher, src, K, tmp) -> dict:
    """CUDA: each config built, run 3 iterations and freed in turn; the allocator's peak above what was held before."""
    import gc
    mem = {}
    for _ in range(args.memory_rounds):
        for part in ("student", "full"):
            for k in (1, K):
                gc.collect()
                torch.cuda.empty_cache()
                sync(args.device)
                base = torch.cuda.memory_allocated() / 2**20
                torch.cuda.reset_peak_memory_stats()
                task, tr = sfd_trainer(teacher, k, args, tmp, src if part == "student" else None, nfe=args.nfe)
                for it in range(3):
                    task.train_step(tr, it)
                sync(args.device)
                mem.setdefault((k, part), []).append({"base": base, "peak": torch.cuda.max_memory_allocated() / 2**20})
                del task, tr
    return mem


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--k", type=int, default=4, help="branches of the B-DENSE student (baseline: 1)")
    p.add_argument("--nfe", type=int, default=2)
    p.add_argument("--iters", type=int, default=2, help="training iterations per timed call")
    p.add_argument("--memory-rounds", type=int, default=2, help="fresh processes per configuration (0: skip)")
    p.add_argument("--child-mem", default="", help=argparse_hidden())
    args = p.parse_args()
    setup(args)
    if args.child_mem:
        return child(args)
    describe_machine(args)
    teacher = make_teacher(args).to(args.device)
    K = args.k
    with tempfile.TemporaryDirectory() as tmp:
        # trainers first (accelerate decides the device/autocast), then one shared set of trajectories
        t1f = sfd_trainer(teacher, 1, args, tmp, None, nfe=args.nfe)
        traj, labels = rollout(teacher, args, t1f[1])
        src = FixedSource(traj, labels)
        confs = {"K=1 student": sfd_trainer(teacher, 1, args, tmp, src, nfe=args.nfe),
                 f"K={K} student": sfd_trainer(teacher, K, args, tmp, src, nfe=args.nfe),
                 "K=1 full": t1f,
                 f"K={K} full": sfd_trainer(teacher, K, args, tmp, None, nfe=args.nfe)}

        def stepper(task, tr):
            counter = itertools.count()
            return lambda: [task.train_step(tr, next(counter)) for _ in range(args.iters)]
        wall, cpu = interleaved({n: stepper(*c) for n, c in confs.items()}, args.device, args.repeats, args.warmup)
        confs.clear()
        del t1f
        mem = memory_in_process(args, teacher, src, K, tmp) if is_cuda(args.device) and args.memory_rounds else {}
    per = {n: [t / args.iters for t in ts] for n, ts in wall.items()}
    rows = []
    for part in ("student", "full"):
        a, b = per[f"K=1 {part}"], per[f"K={K} {part}"]
        what = "student side, same precomputed trajectories" if part == "student" else "full iteration incl. teacher"
        ca, cb = cpu[f"K=1 {part}"], cpu[f"K={K} {part}"]
        rows.append([what, f"{1e3 * med(a):.2f}", spread(a), f"{1e3 * med(b):.2f}", spread(b),
                     f"{paired_ratio(b, a):.3f}", f"{med(b) / med(a):.3f}",
                     "-" if is_cuda(args.device) else f"{paired_ratio(cb, ca):.3f}"])
    table(f"SFD NFE {args.nfe} training iteration, K={K} vs K=1 (ms per iteration, medians of {args.repeats} rounds)",
          ["what", "K=1 ms", "K=1 spread", f"K={K} ms", f"K={K} spread", f"K={K}/K=1 wall (paired)",
           "wall ratio of medians", f"K={K}/K=1 CPU time (paired)"], rows)
    teacher_ms = 1e3 * (med(per["K=1 full"]) - med(per["K=1 student"]))
    print(f"\nteacher rollout share of a K=1 iteration: {teacher_ms:.2f} ms of {1e3 * med(per['K=1 full']):.2f} ms")

    if args.memory_rounds <= 0:
        return
    unit = "CUDA max_memory_allocated, in this process" if is_cuda(args.device) else \
        "peak RSS (VmHWM), a fresh process per config"
    base_argv = [sys.argv[0], *sys.argv[1:]]
    for _ in range(args.memory_rounds if not mem else 0):  # CPU: K=1, K, K=1, K ... each in a fresh process
        for part in ("student", "full"):
            for k in (1, K):
                mem.setdefault((k, part), []).append(child_json(base_argv + ["--child-mem", f"{k}:{part}"]))
    rows = []
    for part in ("student", "full"):
        a, b = mem[(1, part)], mem[(K, part)]
        pa, pb = med([m["peak"] for m in a]), med([m["peak"] for m in b])
        da, db = med([m["peak"] - m["base"] for m in a]), med([m["peak"] - m["base"] for m in b])
        rows.append([part, f"{pa:.1f}", f"{pb:.1f}", f"{pb / pa:.3f}", f"{da:.1f}", f"{db:.1f}",
                     f"{db / da:.3f}" if da > 0 else "-"])
    table(f"Peak memory, {unit}, MiB (median of {args.memory_rounds})",
          ["iteration", "K=1 total", f"K={K} total", "ratio", "K=1 above base", f"K={K} above base", "ratio"], rows)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
