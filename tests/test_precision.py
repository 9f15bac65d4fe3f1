"""Mixed precision and non-finite steps: bf16 runs track fp32; NaN gradients are skipped, counted, then refused."""
import json

import pytest
import torch

from bdense.distill.run import distill_sfd
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
        self.model = torch.nn.Linear(3, 1)
        self.bad = bad

    def train_step(self, tr, step):
        loss = self.model(torch.ones(2, 3)).pow(2).mean()
        if self.bad(step):
            loss = loss * float("nan")
        tr.backward(loss)
        tr.step()
        return {"loss": float(loss.detach())}


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
