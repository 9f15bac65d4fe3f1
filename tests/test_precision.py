"""Mixed precision and non-finite steps: bf16 runs track fp32; NaN gradients are skipped, counted, then refused."""
import json

import pytest
import torch

from bdense.distill.sfd.run import distill_sfd
from bdense.errors import BdenseError
from bdense.train.loop import Task, TrainConfig, Trainer
from bdense.train.rundir import RunDir


def test_bf16_sfd_tracks_fp32(tmp_path, tiny_teacher_file):
    kw = dict(nfe=2, branches=2, trajectories=32, batch=8, lr=1e-3, progress=False, device="cpu", grid_seeds=4,
              teacher_solver="euler", teacher_substeps=2, log_every=1)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "fp32"), precision="fp32", **kw)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "bf16"), precision="bf16", **kw)
    a = [json.loads(x)["loss"] for x in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert b == pytest.approx(a, rel=0.05)
    assert a != b  # bf16 really ran in bf16


class NaNEvery(Task):
    """A task whose loss is non-finite on chosen steps."""
    name = "nan"

    def __init__(self, bad):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.bad = bad

    def train_step(self, tr, step):
        loss = self.model(torch.ones(2, 3)).pow(2).mean()
        if self.bad(step):
            loss = loss * float("nan")
        tr.backward(loss)
        tr.step()
        return {"loss": tr.value(loss)}  # a device value on the CUDA fast path, read back only when logged


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    task = NaNEvery(lambda s: s % 3 == 1)
    tr = Trainer(task, RunDir(tmp_path, {}), TrainConfig(steps=9, lr=1e-2, progress=False, device="cpu"))
    res = tr.run()
    assert res["bad_steps"] == 3 and tr.opt_steps == 6
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


def test_a_run_that_keeps_failing_stops_without_nan_weights(tmp_path):
    task = NaNEvery(lambda s: s >= 2)
    tr = Trainer(task, RunDir(tmp_path, {}), TrainConfig(steps=100, lr=1e-2, progress=False, device="cpu",
                                                         max_bad_steps=5))
    with pytest.raises(BdenseError, match="non-finite gradients"):
        tr.run()
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


def test_a_skipped_step_backs_the_loss_scale_off():
    """A real GradScaler (CPU build): after an overflow that was skipped, the scale halves and the next step can
    unscale and step again (without the reset, unscale_ raises 'already been called since the last update')."""
    from bdense.train.loop import back_off_scaler
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    (scaler.scale(p.sum()) * float("inf")).backward()
    scaler.unscale_(opt)  # as gradient clipping does before the finiteness check
    assert not torch.isfinite(p.grad).all()
    back_off_scaler(scaler)
    assert scaler.get_scale() == 2.0**15
    opt.zero_grad()
    scaler.scale(p.sum()).backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))
    back_off_scaler(None)  # fp32/bf16: nothing to do


class OverflowAbove(Task):
    """fp16 overflow forced while the loss scale is above `limit` (as a large loss overflows at a large scale)."""
    name = "overflow"

    def __init__(self, limit):
        self.model = torch.nn.Linear(3, 1)
        self.limit = limit

    def train_step(self, tr, step):
        with tr.autocast():
            loss = self.model(torch.ones(2, 3, device=tr.device)).float().pow(2).mean()
        if tr.acc.scaler.get_scale() > self.limit:
            loss = loss * float("inf")
        tr.backward(loss)
        tr.step()
        return {"loss": tr.value(loss)}  # a device value on the CUDA fast path, read back only when logged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 loss scaling needs CUDA")
def test_fp16_overflow_backs_the_scale_off_and_the_run_finishes(tmp_path):
    task = OverflowAbove(limit=2.0**13)
    tr = Trainer(task, RunDir(tmp_path, {}), TrainConfig(steps=6, lr=1e-2, precision="fp16", grad_clip=1.0,
                                                         progress=False, max_bad_steps=5))
    start = tr.acc.scaler.get_scale()
    res = tr.run()
    skipped = int(torch.log2(torch.tensor(start / 2.0**13)).item())  # 2^16 -> 2^13: three halvings
    assert res["completed"] and res["bad_steps"] == skipped and tr.opt_steps == 6 - skipped
    assert tr.acc.scaler.get_scale() <= 2.0**13
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
