"""The one training loop: teacher training and both distillation hosts plug a Task into it.

It owns what every run needs: accelerate (devices, processes, mixed precision), the optimizer and its
learning-rate schedule, EMA, non-finite checks, metrics, atomic checkpoints with exact resume, and a clean
stop on Ctrl-C/SIGTERM. A Task owns the model and the math of one iteration.
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import torch

from ..errors import BdenseError, Interrupted
from .ema import EMA
from .rundir import RunDir
from .state import optimizer_from_flat, optimizer_to_flat


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | step-half (lr/10 at half way) | linear (to 0)
    warmup: int = 0
    ema_decay: float = 0.0  # 0: no EMA (the final model is the raw weights)
    grad_clip: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0  # 0: only at the end (and on interrupt)
    max_bad_steps: int = 20
    progress: bool = True
    device: str | None = None
    betas: tuple = (0.9, 0.999)
    snapshot_steps: tuple = ()  # also keep the weights (EMA if any) at these steps, for quality-vs-progress curves
    on_snapshot: object = None  # callable(step, weights) after each snapshot; may raise to stop (bdense tune prunes so)
    # auto: on CUDA, fused Adam and no host sync per optimizer step (non-finite steps skipped on the device, metrics
    # read at log time); on CPU the plain path, bit for bit as before. on / off force it (tests use on for CPU).
    fast_path: str = "auto"

    def __post_init__(self):
        """Refuse impossible settings before any run directory is touched."""
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise BdenseError(f"unknown --precision '{self.precision}'; use fp32, bf16 or fp16")
        if self.precision == "fp16" and (self.device == "cpu" or not torch.cuda.is_available()):
            raise BdenseError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        if self.fast_path not in ("auto", "on", "off"):
            raise BdenseError(f"fast_path must be auto, on or off, got '{self.fast_path}'")
        if self.steps < 1:
            raise BdenseError(f"nothing to train: {self.steps} iterations; raise --steps or --trajectories")
        lr_at(self, 0)  # an unknown lr schedule fails here


def lr_at(cfg: TrainConfig, step: int, total: int | None = None) -> float:
    total = total or cfg.steps
    scale = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.lr_schedule == "step-half":
        scale *= 0.1 if step >= total // 2 else 1.0
    elif cfg.lr_schedule == "linear":
        scale *= max(0.0, 1.0 - step / total)
    elif cfg.lr_schedule != "constant":
        raise BdenseError(f"unknown lr schedule '{cfg.lr_schedule}'; use constant, step-half or linear")
    return cfg.lr * scale


def back_off_scaler(scaler) -> None:
    """After a skipped non-finite step, lower the fp16 loss scale as GradScaler.update() would have.

    accelerate calls scaler.update() inside optimizer.step(), which a skipped step never reaches: without this
    the scale never backs off from an overflow and the run aborts after max_bad_steps. update(new_scale) also
    clears the per-step state left by unscale_() (from gradient clipping), so the next step can unscale again.
    """
    if scaler is None or not scaler.is_enabled():
        return
    scaler.update(scaler.get_scale() * scaler.get_backoff_factor())


class Trainer:
    """Handed to Task.train_step: backward(), step(), the shared generator and this process's data shard."""

    def __init__(self, task, rundir: RunDir, cfg: TrainConfig):
        from accelerate import Accelerator
        self.task, self.rundir, self.cfg = task, rundir, cfg
        cpu = cfg.device == "cpu" or not torch.cuda.is_available()
        mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.precision]
        from accelerate.state import AcceleratorState
        AcceleratorState._reset_state()  # several runs in one process (compare, tune) may differ in precision
        self.acc = Accelerator(mixed_precision=mp, cpu=cpu)
        self.device = self.acc.device
        task.to(self.device)
        self.model = task.model
        self.fast = cfg.fast_path == "on" or (cfg.fast_path == "auto" and self.device.type == "cuda")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, **({"fused": True} if self.fast else {}))
        self._inner_opt = self.opt
        # fast path: counters of skipped steps live on the device until the next log line / checkpoint
        self._bad_dev = torch.zeros((), dtype=torch.int64, device=self.device)
        self._row_dev = torch.zeros((), dtype=torch.int64, device=self.device)
        self._maxrow_dev = torch.zeros((), dtype=torch.int64, device=self.device)
        self._tried = 0
        self.ddp_model, self.opt = self.acc.prepare(self.model, self.opt)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step_idx = 0
        self.bad_steps = self.bad_in_row = 0
        self.opt_steps = 0
        self._stop = False

    # -- used by tasks -------------------------------------------------------
    @property
    def world(self) -> int:
        return self.acc.num_processes

    def shard(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """This process's rows of a global batch (drawn identically on every process from the shared generator)."""
        if t is None:
            return None
        n = t.shape[0]
        if n % self.world:
            raise BdenseError(f"global batch {n} is not divisible by {self.world} processes; change --batch")
        per = n // self.world
        r = self.acc.process_index
        return t[r * per:(r + 1) * per].to(self.device)

    def shard_list(self, items: list) -> list:
        """This process's part of a global list (e.g. the seeds of a batch)."""
        if len(items) % self.world:
            raise BdenseError(f"global batch {len(items)} is not divisible by {self.world} processes; change --batch")
        per = len(items) // self.world
        return items[self.acc.process_index * per:(self.acc.process_index + 1) * per]

    def autocast(self):
        return self.acc.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def step(self) -> bool:
        """Clip, check for non-finite gradients (skip and count), apply. Returns whether the step was applied."""
        if self.cfg.grad_clip > 0 and self.acc.sync_gradients:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if self.fast:
            return self._step_on_device(grads)
        finite = not bool(self._found_nonfinite(grads)) if grads else True  # one sync
        if finite:
            self.opt.step()
            self.opt_steps += 1
            self.bad_in_row = 0
        else:
            back_off_scaler(getattr(self.acc, "scaler", None))
            self.bad_steps += 1
            self.bad_in_row += 1
            if self.bad_in_row >= self.cfg.max_bad_steps:
                raise BdenseError(f"{self.bad_in_row} optimizer steps in a row had non-finite gradients; stopping "
                                  f"without writing NaN weights: lower --lr or use --precision fp32")
        self.opt.zero_grad(set_to_none=True)
        return finite

    def _step_on_device(self, grads) -> None:
        """The step without a host sync: fused Adam skips its update where found_inf is 1 (as under GradScaler),
        the skipped-step counters stay on the device, and sync_counters() reads them at log time. Returns None:
        whether this step was applied is not known on the host."""
        found = self._found_nonfinite(grads)
        inner = self._inner_opt.optimizer if hasattr(self._inner_opt, "optimizer") else self._inner_opt
        inner.found_inf = found
        try:
            self.opt.step()
        finally:
            inner.found_inf = None
        bad = found.to(torch.int64)
        self._bad_dev += bad
        self._row_dev.mul_(bad).add_(bad)  # length of the current run of skipped steps
        torch.maximum(self._maxrow_dev, self._row_dev, out=self._maxrow_dev)
        self._tried += 1
        self.opt.zero_grad(set_to_none=True)
        return None

    def _found_nonfinite(self, grads) -> torch.Tensor:
        """A 0-d device tensor, 1.0 if any gradient holds inf/NaN: one foreach pass, no per-parameter Python (the
        check AMP's GradScaler runs; grads * 1.0 is exact). 0-d: fused Adam subtracts it from its step counters."""
        found = torch.zeros((), device=self.device)
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=self.device))
        return found

    def sync_counters(self) -> None:
        """Fast path: bring the skipped-step counters to the host (one sync) and stop a run that keeps failing."""
        if not self.fast:
            return
        bad, maxrow, row = (int(v) for v in torch.stack([self._bad_dev, self._maxrow_dev, self._row_dev]).tolist())
        self.bad_steps += bad
        self.opt_steps += self._tried - bad
        self.bad_in_row = row
        self._bad_dev.zero_()
        self._maxrow_dev.copy_(self._row_dev)
        self._tried = 0
        if maxrow >= self.cfg.max_bad_steps:
            raise BdenseError(f"{maxrow} optimizer steps in a row had non-finite gradients; stopping "
                              f"without writing NaN weights: lower --lr or use --precision fp32")

    def value(self, t: torch.Tensor):
        """A scalar metric: a float on the plain path, a device tensor on the fast path (read at log time)."""
        return t.detach() if self.fast else float(t.detach())

    def values(self, t: torch.Tensor) -> list:
        """t.tolist() on the plain path; on the fast path the same nesting of 0-d device tensors (no sync)."""
        if not self.fast:
            return t.tolist()
        t = t.detach()
        return [self.values(r) for r in t.unbind(0)] if t.dim() > 1 else list(t.unbind(0))

    def mean_over_processes(self, metrics: dict) -> dict:
        """Metrics averaged over processes (each measured its own shard), so logs do not depend on the device count."""
        keys = [k for k, v in metrics.items() if isinstance(v, float)]
        if self.world == 1 or not keys:
            return metrics
        vals = self.acc.reduce(torch.tensor([metrics[k] for k in keys], device=self.device), reduction="mean")
        return dict(metrics, **dict(zip(keys, vals.tolist())))

    def reset_optimizer(self, lr: float | None = None) -> None:
        self.opt.state.clear()
        for g in self.opt.param_groups:
            g["lr"] = lr if lr is not None else self.cfg.lr

    # -- state -------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema/{k}": v for k, v in self.ema.shadow.items()})
        ot, ometa = optimizer_to_flat(self.opt.optimizer if hasattr(self.opt, "optimizer") else self.opt)
        tensors.update(ot)
        tensors["rng/gen"] = self.gen.get_state()
        tensors["rng/torch"] = torch.get_rng_state()
        ttensors, tmeta = self.task.extra_state()
        tensors.update({f"task/{k}": v for k, v in ttensors.items()})
        meta = {"step": self.step_idx, "optimizer": ometa, "ema_updates": self.ema.updates if self.ema else 0,
                "bad_steps": self.bad_steps, "opt_steps": self.opt_steps, "task": tmeta}
        return tensors, meta

    def load(self, tensors: dict, meta: dict) -> None:
        def sub(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.task.load_extra_state(sub("task/"), meta["task"])
        self.model.load_state_dict(sub("model/"))
        if self.ema is not None:
            self.ema.shadow = {k: v.to(self.device) for k, v in sub("ema/").items()}
            self.ema.updates = meta["ema_updates"]
        inner = self.opt.optimizer if hasattr(self.opt, "optimizer") else self.opt
        optimizer_from_flat(inner, tensors, meta["optimizer"])
        self.gen.set_state(tensors["rng/gen"])
        torch.set_rng_state(tensors["rng/torch"])
        self.step_idx, self.bad_steps, self.opt_steps = meta["step"], meta["bad_steps"], meta["opt_steps"]

    def save(self) -> None:
        self.sync_counters()
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            tensors, meta = self.state()
            path = self.rundir.save_state(self.step_idx, tensors, meta)
            self.rundir.log(f"checkpoint {path.name}", echo=False)

    def final_weights(self) -> dict:
        return self.ema.shadow if self.ema is not None else self.model.state_dict()

    # -- the loop ----------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        cfg = self.cfg
        if resume:
            self.load(*self.rundir.load_state())
            self.rundir.log(f"resumed at step {self.step_idx}")
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum, frame):
            self._stop = signum
        old = old if threading.current_thread() is threading.main_thread() else {}  # handlers: main thread only
        for s in old:
            signal.signal(s, on_signal)
        bar = None
        if cfg.progress and self.acc.is_main_process:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step_idx, desc=self.task.name, dynamic_ncols=True)
        t0, done_since = time.time(), 0
        first_step = self.step_idx
        last = {}
        try:
            while self.step_idx < cfg.steps and not self._stop:
                lr = lr_at(cfg, *self.task.lr_position(self.step_idx, cfg.steps))
                for g in self.opt.param_groups:
                    g["lr"] = lr
                if not self.model.training:  # train() walks every module: only after something set eval()
                    self.model.train()
                last = self.task.train_step(self, self.step_idx)
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step_idx += 1
                done_since += 1
                if self.step_idx == first_step + 1 and self.acc.is_main_process:  # includes any compile time
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    self.rundir.log(f"first iteration {time.time() - t0:.2f} s (includes compilation, if any)",
                                    echo=False)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in last.items() if isinstance(v, float) and "/" not in k}, refresh=False)
                if self.step_idx % cfg.log_every == 0 or self.step_idx == cfg.steps:
                    self.sync_counters()
                    last = self.mean_over_processes(host_metrics(last))
                    dt = time.time() - t0
                    row = {"step": self.step_idx, "lr": lr, "it_per_s": done_since / max(dt, 1e-9),
                           "bad_steps": self.bad_steps, **last}
                    if self.acc.is_main_process:
                        self.rundir.metrics(row)
                    t0, done_since = time.time(), 0
                if self.step_idx in cfg.snapshot_steps and self.acc.is_main_process:
                    self.rundir.save_snapshot(self.step_idx, self.final_weights())
                    if cfg.on_snapshot is not None:
                        cfg.on_snapshot(self.step_idx, self.final_weights())
                if cfg.checkpoint_every and self.step_idx % cfg.checkpoint_every == 0 and self.step_idx < cfg.steps:
                    self.save()
            self.sync_counters()
            if self.step_idx > first_step and self.opt_steps == 0:  # nothing learned: no model may come of it
                raise BdenseError(f"all {self.step_idx - first_step} steps had non-finite gradients and were "
                                  f"skipped, so no model is written; lower --lr, use --precision fp32 or check "
                                  f"--branch-weights")
            self.save()
            if self._stop and self.step_idx < cfg.steps:
                self.rundir.log(f"interrupted at step {self.step_idx}; checkpoint written, continue with --resume")
                raise Interrupted(self._stop,
                                  f"checkpoint of step {self.step_idx} written in {self.rundir.path}; continue "
                                  f"with --resume (or rerun the same compare/tune command)")
        finally:
            if bar is not None:
                bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        self.sync_counters()
        return {"completed": self.step_idx >= cfg.steps, "step": self.step_idx, "bad_steps": self.bad_steps,
                **host_metrics(last)}


class Task:
    """What a trainer needs from a method. Subclasses set .model and .name and implement train_step."""

    name = "train"
    model: torch.nn.Module

    def to(self, device) -> None:
        to_device(self.model, device)

    def train_step(self, trainer: Trainer, step: int) -> dict:
        raise NotImplementedError

    def lr_position(self, step: int, total: int) -> tuple[int, int]:
        """(step, total) the lr schedule sees; PD restarts it each round."""
        return step, total

    def extra_state(self) -> tuple[dict, dict]:
        return {}, {}

    def load_extra_state(self, tensors: dict, meta: dict) -> None:
        pass


def host_metrics(metrics: dict) -> dict:
    """Metrics with device tensors (the fast path's) read as floats, in one transfer."""
    keys = [k for k, v in metrics.items() if torch.is_tensor(v)]
    if not keys:
        return metrics
    vals = torch.stack([metrics[k].float().reshape(()) for k in keys]).tolist()
    return dict(metrics, **dict(zip(keys, vals)))


def to_device(model: torch.nn.Module, device) -> torch.nn.Module:
    """Move a model; on CUDA also use channels_last, which the UNet's convolutions run faster in."""
    model.to(device)
    if torch.device(device).type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model



