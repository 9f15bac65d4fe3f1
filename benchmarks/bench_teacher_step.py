"""Teacher training speed: train-teacher's real loop against a bare forward + backward + Adam step, per preset.

Why (issue 23): a teacher is only as good as the steps it gets, and on the H200 the 1.62M-parameter mnist UNet
trained at 10-20 it/s where the math allows hundreds: the loop, not the network, was the cost. This measures the
loop's overhead where it runs: the Trainer + TeacherTask that `bdense train-teacher` runs (batch drawn from the data
on the host, lr schedule, the EDM loss, gradient clipping, the non-finite check, Adam, EMA, progress bar, metrics),
against a bare step of a copy of the same network at the same batch in the same process (one fixed batch, forward,
EDM loss, backward, the same Adam), interleaved round by round (A B, B A, ...), and prints loop/bare as a ratio
(median of per-round ratios). Data are random images of the preset's shape: the loop's speed does not depend on
pixel values, and no data set needs fetching. Checkpoints are not written (they are not the per-step cost).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_teacher_step.py              # digits, mnist, ddpm-cifar10
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_teacher_step.py --presets "" --profile mnist --profile-steps 5
    python benchmarks/bench_teacher_step.py --device cuda --batches digits=256,mnist=256,ddpm-cifar10=128 --profile mnist
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import tempfile
from pathlib import Path

import torch

from common import describe_machine, interleaved, is_cuda, med, paired_ratio, setup, spread, table

# preset -> (channels, resolution, CPU batch, steps per timed round on CPU); the batches are train-teacher's (digits
# 64, mnist 128) except ddpm-cifar10, whose CPU step at batch 64 takes ~45 s here: batch 4 keeps the run short
PRESETS = {"digits": (1, 8, 64, 20), "mnist": (1, 28, 128, 3), "ddpm-cifar10": (3, 32, 4, 1)}


def synthetic_data(channels: int, resolution: int, n: int = 2048):
    from bdense.data.datasets import ImageData
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1
    return ImageData(images, torch.zeros(n, dtype=torch.long), 10, "synthetic", None)


class LoopRunner:
    """train-teacher's Trainer + TeacherTask, advanced by n steps per call (Trainer.run with a raised step target)."""

    def __init__(self, preset: str, batch: int, device: str, precision: str, tmp: str):
        from bdense.models.factory import new_model
        from bdense.train.loop import Trainer
        from bdense.train.rundir import RunDir
        from bdense.train.teacher import TeacherTask, teacher_train_config
        c, r = PRESETS[preset][:2]
        torch.manual_seed(0)
        self.model = new_model("edm", c, r, preset=preset)
        self.start_weights = copy.deepcopy(self.model.state_dict())
        cfg = teacher_train_config(steps=1, lr=5e-4, ema_decay=0.999, precision=precision, seed=0,
                                   checkpoint_every=10**9, progress=True, device=device, log_every=50)
        self.trainer = Trainer(TeacherTask(self.model, synthetic_data(c, r), batch), RunDir(Path(tmp) / preset, {}), cfg)
        self.trainer.save = lambda: None  # checkpoints are not the per-step cost
        self.trainer.cfg.steps = 0

    def __call__(self, n: int) -> None:
        self.trainer.cfg.steps += n
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar still renders, out of sight
            self.trainer.run()


class BareStep:
    """A copy of the same network: one fixed batch, forward, EDM loss, backward, Adam with the loop's settings."""

    def __init__(self, loop: LoopRunner, batch: int, precision: str):
        from bdense.train.teacher import edm_loss
        self.loss_fn, self.precision = edm_loss, precision
        self.model = copy.deepcopy(loop.model)
        self.model.load_state_dict(loop.start_weights)
        self.model.train()
        inner = loop.trainer.opt.optimizer if hasattr(loop.trainer.opt, "optimizer") else loop.trainer.opt
        d = inner.defaults
        self.opt = torch.optim.Adam(self.model.parameters(), lr=d["lr"], betas=d["betas"],
                                    foreach=d.get("foreach"), fused=d.get("fused"))
        dev = loop.trainer.device
        data = loop.trainer.task.data
        g = torch.Generator().manual_seed(1)
        self.x0 = data.images[torch.randint(len(data), (batch,), generator=g)].to(dev)
        self.noise = torch.randn(self.x0.shape, generator=g).to(dev)
        self.sigma = (torch.randn(batch, generator=g) * 1.2 - 1.2).exp().to(dev)
        self.device = dev
        self.sigma_data = float(self.model.config["edm"]["sigma_data"])

    def __call__(self, n: int) -> None:
        for _ in range(n):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                d = self.model(self.x0 + self.sigma.view(-1, 1, 1, 1) * self.noise, self.sigma, None)[:, -1].float()
            loss = self.loss_fn(self.x0, d, self.sigma, self.sigma_data).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


def measure(preset: str, batch: int, n: int, args, tmp: str) -> list:
    loop = LoopRunner(preset, batch, args.device, args.precision, tmp)
    bare = BareStep(loop, batch, args.precision)
    wall, cpu = interleaved({"loop": lambda: loop(n), "bare": lambda: bare(n)}, args.device, args.repeats,
                            args.warmup)
    params = sum(p.numel() for p in loop.model.parameters()) / 1e6
    return [preset, f"{params:.2f}M", batch, n, n / med(wall["bare"]), n / med(wall["loop"]),
            paired_ratio(wall["loop"], wall["bare"]), paired_ratio(cpu["loop"], cpu["bare"]),
            f"{spread(wall['bare'])} / {spread(wall['loop'])}"]


def profile(preset: str, batch: int, steps: int, args, tmp: str, rows: int) -> str:
    """torch.profiler table of `steps` loop iterations (after one untimed warm-up), ops by self time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    loop = LoopRunner(preset, batch, args.device, args.precision, tmp)
    loop(1)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if is_cuda(args.device) else [])
    with torch_profile(activities=acts) as prof:
        loop(steps)
    key = "self_cuda_time_total" if is_cuda(args.device) else "self_cpu_time_total"
    text = prof.key_averages().table(sort_by=key, row_limit=rows)
    print(f"\n### profile: {preset}, batch {batch}, {steps} loop steps\n\n```\n{text}\n```", flush=True)
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--presets", default=",".join(PRESETS), help="comma list of " + ", ".join(PRESETS))
    p.add_argument("--batches", default="", help="preset=batch overrides, e.g. mnist=256,ddpm-cifar10=128")
    p.add_argument("--steps", default="", help="preset=steps-per-round overrides, e.g. mnist=20")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians over these)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--profile", default="", help="then profile this preset's loop (--presets '' for only that)")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--profile-rows", type=int, default=25)
    args = p.parse_args()
    args.preset, args.resolution, args.channels, args.batch = args.presets, "R", "C", "per preset"  # the header line
    setup(args)

    def overrides(text):
        return {k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}
    batches, steps = overrides(args.batches), overrides(args.steps)
    presets = [k for k in args.presets.split(",") if k]
    unknown = [k for k in [*presets, *batches, *steps, *([args.profile] if args.profile else [])] if k not in PRESETS]
    if unknown:
        sys.exit(f"unknown preset(s) {', '.join(unknown)}; use {', '.join(PRESETS)}")
    gpu = is_cuda(args.device)
    describe_machine(args)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for preset in presets:
            _, _, b, n = PRESETS[preset]
            rows.append(measure(preset, batches.get(preset, b), steps.get(preset, n * (10 if gpu else 1)), args, tmp))
            print(f"# {preset} done", flush=True)
        if rows:
            table("train-teacher loop vs bare step",
                  ["preset", "params", "batch", "steps/round", "bare it/s", "loop it/s", "loop/bare (wall)",
                   "loop/bare (CPU)", "spread bare / loop"], rows)
        if args.profile:
            b = batches.get(args.profile, PRESETS[args.profile][2])
            profile(args.profile, b, args.profile_steps, args, tmp, args.profile_rows)


if __name__ == "__main__":
    main()
