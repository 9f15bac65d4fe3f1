"""Shared helpers for the benchmarks: one parser, honest timers, interleaved repeats, medians and tables.

Why: the machines we measure on are noisy (2 shared CPU cores here, a lent GPU elsewhere), so every script
measures its A and B configurations in one process, interleaved (A B A B ...), and reports medians and the
median of the per-round ratios. On CUDA every timer is bracketed by torch.cuda.synchronize().
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def parser(doc: str, batch: int = 128, preset: str = "digits", resolution: int = 8, repeats: int = 7):
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default=preset, help="UNet preset: tiny, digits, mnist, cifar, ddpm-cifar10")
    p.add_argument("--resolution", type=int, default=resolution)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved rounds (medians over these)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on CPU (0: torch's default). 1 by default: on shared cores two OpenMP threads "
                        "stall at every barrier when another process runs, which makes timings swing 10x")
    return p


def setup(args) -> None:
    if args.threads and not str(args.device).startswith("cuda"):
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda but torch.cuda.is_available() is False")


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device, precision: str):
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of fn, the device drained before and after.

    On a shared CPU the wall clock also counts time spent waiting for a core; the process CPU time does not
    (it still counts slowdowns from shared caches, memory bandwidth or a hypervisor). Meaningless on CUDA."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def interleaved(fns: dict, device, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Round-robin timing: every round calls each fn once, the order reversed every other round (A B C, C B A,
    A B C ...) so that no configuration always runs first. Returns ({name: [wall s]}, {name: [CPU s]})."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn, device)
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
            w, c = timed(fn, device)
            wall[k].append(w)
            cpu[k].append(c)
    return wall, cpu


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def med(xs) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a_i / b_i (robust to slow drift of the machine)."""
    return statistics.median(x / y for x, y in zip(a, b))


def spread(xs) -> str:
    """min-max range in percent of the median, to show how noisy a row was."""
    m = med(xs)
    return f"{100 * (max(xs) - min(xs)) / m:.0f}%" if m else "-"


def table(title: str, headers: list[str], rows: list[list]) -> str:
    """A markdown table (printed and returned), so output pastes straight into RESULTS.md."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [f"\n### {title}", "",
             "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def describe_machine(args) -> str:
    if str(args.device).startswith("cuda"):
        dev = torch.cuda.get_device_name()
    else:
        dev = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    line = (f"# {Path(sys.argv[0]).name}: torch {torch.__version__}, {dev}, load avg {load:.2f}; "
            f"preset {args.preset} {args.channels}x{args.resolution}x{args.resolution}, batch {args.batch}, "
            f"{args.precision}, {args.repeats} interleaved rounds")
    print(line, flush=True)
    return line


def make_teacher(args, seed: int = 0):
    """An EDM teacher of the preset with fixed random weights (same seed -> same weights), in eval mode."""
    from bdense.models.factory import new_model
    torch.manual_seed(seed)
    return new_model("edm", args.channels, args.resolution, preset=args.preset).eval()


def child_json(argv: list[str], timeout: float = 900) -> dict:
    """Run this interpreter on argv in a fresh process; its last stdout line is JSON."""
    import json
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"child {' '.join(argv)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class FixedSource:
    """A trajectory source serving the same precomputed (trajectory, labels) every step: the student side only."""

    size = 10**9

    def __init__(self, traj, labels):
        self.traj, self.labels = traj, labels

    def batch(self, seeds, device):
        return self.traj, self.labels


def sfd_trainer(teacher, k: int, args, tmp: str, source=None, nfe: int = 2, steps: int = 10**6, seed: int = 0):
    """(SFDTask, Trainer) for an SFD student with k branches, lr 5e-5 as SFD, the run dir under tmp."""
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.task import SFDTask
    from bdense.distill.weights import parse_weights
    from bdense.models.branches import widen
    from bdense.train.loop import TrainConfig, Trainer
    from bdense.train.rundir import RunDir
    plan = SFDPlan(nfe=nfe, branches=k)
    task = SFDTask(teacher, widen(teacher, k), plan, parse_weights(None, k), args.batch, seed,
                   trajectory_source=source)
    cfg = TrainConfig(steps=steps, lr=5e-5, device=args.device, precision=args.precision, progress=False)
    tr = Trainer(task, RunDir(Path(tmp) / f"k{k}-{'src' if source else 'full'}-{id(task)}", {}), cfg)
    return task, tr
