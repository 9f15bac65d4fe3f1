"""One short SFD training run on a tiny teacher, shared by the tests that compare students trained a few steps."""
import torch

from bdense.distill.sfd.plan import SFDPlan
from bdense.distill.sfd.task import SFDTask
from bdense.distill.weights import parse_weights
from bdense.models.branches import widen
from bdense.train.loop import TrainConfig, Trainer
from bdense.train.rundir import RunDir


def train_sfd_steps(tmp_path, teacher, name, k, heads="shared", dense=None, steps=2):
    """A K-branch student of `teacher` after `steps` SFD iterations at NFE 3 (ramp weights, seed 0), in eval mode."""
    plan = SFDPlan(nfe=3, branches=k, teacher_solver="dpmpp_3m")
    torch.manual_seed(0)
    student = widen(teacher, k, heads=heads).train()
    task = SFDTask(teacher, student, plan, parse_weights("ramp" if k > 1 else None, k), batch=4, seed=0,
                   dense_intervals=dense)
    tr = Trainer(task, RunDir(tmp_path / name, {}), TrainConfig(steps=steps, lr=1e-3, progress=False, device="cpu"))
    [task.train_step(tr, it) for it in range(steps)]
    return student.eval()
