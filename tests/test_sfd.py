"""SFD host: the grid plan, K = 1 equals plain SFD bit for bit, branches can be trained to their targets."""
import copy
import math

import pytest
import torch

from bdense.distill.sfd.plan import SFDPlan, teacher_solver_options
from bdense.distill.sfd.task import SFDTask
from bdense.distill.sfd.trajectories import teacher_trajectories, trajectory_seeds
from bdense.distill.weights import ConstantWeights, parse_weights
from bdense.errors import BdenseError
from bdense.models.branches import widen
from bdense.solvers import solve
from bdense.train.loop import TrainConfig, Trainer
from bdense.train.rundir import RunDir
from sfd_port import network, sfd_dpmpp
from sfd_steps import train_sfd_steps


def test_plan_grids_and_targets():
    plan = SFDPlan(nfe=2, branches=4)
    s, t = plan.grids()
    assert plan.points == 4 and len(t) == 13 and torch.equal(t[::4], s)
    assert s[0] == 80.0 and abs(float(s[-1]) - 0.006) < 1e-12
    assert [plan.target_index(1, k) for k in (1, 2, 3, 4)] == [5, 6, 7, 8]
    assert plan.trained_intervals() == [1, 2] and plan.teacher_nfe() == 12
    assert [SFDPlan(nfe=3, branches=2).target_index(2, k) for k in (1, 2)] == [10, 12]
    assert SFDPlan(nfe=2, afs=False).trained_intervals() == [0, 1]


@pytest.mark.parametrize("kw, msg", [(dict(nfe=2, branches=3), "divide"), (dict(nfe=0), "between 1 and 8"),
                                     (dict(nfe=2, teacher_solver="rk45"), "unknown --teacher-solver")])
def test_plan_refuses_what_the_grid_cannot_serve(kw, msg):
    with pytest.raises(BdenseError, match=msg):
        SFDPlan(**kw)


def test_weights_parsing():
    assert parse_weights(None, 3).at(0, 10) == [1.0, 1.0, 1.0]
    assert parse_weights("1,2,3,4", 4).at(5, 10) == [1, 2, 3, 4]
    assert parse_weights("sum1:1,1,2", 3).at(0, 10) == [0.25, 0.25, 0.5]
    assert parse_weights("end:0.4", 4).at(0, 10) == pytest.approx([0.2, 0.2, 0.2, 0.4])
    assert parse_weights("end:0.4:linear", 4).at(0, 10) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    for bad in ("1,2", "1,-1,1", "a,b,c", "1,nan,1", "end:0", "end:1.5", "decay:square:0.1", "decay:linear:2",
                "decay:linear:0.1:0.8-0.2"):
        with pytest.raises(BdenseError):
            parse_weights(bad, 3)


@pytest.mark.parametrize("spec, step, expect", [
    ("decay:linear:0", 0, [1, 1, 1]), ("decay:linear:0", 50, [0.5, 0.5, 1]), ("decay:linear:0", 100, [0, 0, 1]),
    ("decay:linear:0.2", 100, [0.2, 0.2, 1]), ("decay:cosine:0", 50, [0.5, 0.5, 1]),
    ("decay:cosine:0", 25, [0.5 + 0.5 * math.cos(math.pi / 4)] * 2 + [1]),
    ("decay:linear:0:0.5-1", 25, [1, 1, 1]), ("decay:linear:0:0.5-1", 75, [0.5, 0.5, 1]),
    ("decay:linear:0:0.5-1", 100, [0, 0, 1])])
def test_weight_schedules_give_documented_values(spec, step, expect):
    assert parse_weights(spec, 3).at(step, 100) == pytest.approx(expect)


def plain_sfd_iteration(teacher, student, opt, seeds, plan, teacher_path):
    """SFD as its paper states it, written independently of bdense.distill.sfd.task (K = 1); teacher_path(x, grid)
    gives the teacher's trajectory."""
    s, t = plan.grids()
    with torch.no_grad():
        gen = [torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(sd)) for sd in seeds]
        x = torch.stack(gen) * float(s[0])
        traj = teacher_path(x, t)
    losses = []
    for i in range(len(s) - 1):
        ti, tn = float(s[i]), float(s[i + 1])
        if i == 0:
            x = x + (tn - ti) * (x / math.sqrt(1 + ti * ti))  # AFS
            continue
        d = student(x, torch.full((x.shape[0],), ti))[:, 0]
        x_next = x + (tn - ti) * (x - d) / ti
        loss = (x_next - traj[(i + 1) * plan.substeps]).abs().flatten(1).sum(1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        x = x_next.detach()
    return losses


def reference_sfd_run(teacher, plan, teacher_path):
    student = copy.deepcopy(teacher).train().requires_grad_(True)  # SFDTask froze the teacher it was given
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    losses = [plain_sfd_iteration(teacher, student, opt, trajectory_seeds(0, it, 4, 8), plan, teacher_path)
              for it in range(2)]
    return student, losses


def test_k1_reproduces_plain_sfd_exactly(tmp_path, tiny_teacher):
    """The student half bit for bit (the reference fed bdense's SFD teacher), and the whole run, teacher included,
    against the independent port of SFD's sampler (tests/sfd_port.py) to float rounding."""
    plan = SFDPlan(nfe=2, branches=1, teacher_solver="dpmpp_3m")
    student = widen(tiny_teacher, 1).train()
    task = SFDTask(tiny_teacher, student, plan, ConstantWeights((1.0,)), batch=4, seed=0)
    tr = Trainer(task, RunDir(tmp_path / "run", {}), TrainConfig(steps=2, lr=1e-3, progress=False, device="cpu"))
    ours = [task.train_step(tr, it) for it in range(2)]
    ours = [[o["loss/i1/b1"], o["loss/i2/b1"]] for o in ours]
    bdense_teacher = lambda x, t: solve(plan.teacher_solver, tiny_teacher, x, t, return_trajectory=True,  # noqa: E731
                                        **teacher_solver_options(plan))
    same, same_losses = reference_sfd_run(tiny_teacher, plan, bdense_teacher)
    assert ours == same_losses
    for (k, a), (_, b) in zip(student.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), k
    port, port_losses = reference_sfd_run(tiny_teacher, plan, lambda x, t: sfd_dpmpp(network(tiny_teacher), x, t))
    flat = lambda rows: [v for row in rows for v in row]  # noqa: E731
    assert flat(ours) == pytest.approx(flat(port_losses), rel=1e-5)
    for (k, a), (_, b) in zip(student.state_dict().items(), port.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), k
    raw, raw_losses = reference_sfd_run(tiny_teacher, plan, lambda x, t: sfd_dpmpp(network(tiny_teacher), x, t,
                                                                                   dynamic=False))
    assert flat(ours) != pytest.approx(flat(raw_losses), rel=1e-3)  # thresholding reaches the targets of this teacher


class FixedTrajectories:
    """A trajectory source that serves the same trajectories every step (to test that branches can fit them)."""

    def __init__(self, teacher, plan, seeds):
        self.traj, self.labels = teacher_trajectories(teacher, plan, seeds, "cpu")

    size = 10**6  # any seed: the same trajectories are served every step

    def batch(self, seeds, device):
        return self.traj, self.labels


def test_every_branch_loss_goes_to_zero_on_representable_targets(tmp_path, tiny_teacher):
    plan = SFDPlan(nfe=1, branches=2, substeps=2, teacher_solver="euler", afs=False, sigma_max=5.0)
    student = widen(tiny_teacher, 2)
    task = SFDTask(tiny_teacher, student, plan, ConstantWeights((1.0, 1.0)), batch=4, seed=0,
                   trajectory_source=FixedTrajectories(tiny_teacher, plan, list(range(4))))
    tr = Trainer(task, RunDir(tmp_path / "run", {}), TrainConfig(steps=1, lr=2e-3, progress=False, device="cpu"))
    first = task.train_step(tr, 0)
    # branch 1 targets the teacher's own first Euler sub-step: exact at initialisation
    assert first["loss/i0/b1"] < 1e-3 * first["loss/i0/b2"]
    for it in range(1, 300):
        last = task.train_step(tr, it)
    assert last["loss/i0/b2"] < 0.05 * first["loss/i0/b2"]
    assert last["loss/i0/b1"] < 0.05 * first["loss/i0/b2"]


def test_block_heads_with_the_endpoint_alone_train_the_k1_student_bit_for_bit(tmp_path, tiny_teacher):
    """With block heads the network is the endpoint branch unchanged, so weighing the intermediate branches 0
    (dense intervals 0) leaves exactly plain SFD; with them weighed the endpoint moves differently."""
    k1 = train_sfd_steps(tmp_path, tiny_teacher, "k1", 1, "shared")
    d0 = train_sfd_steps(tmp_path, tiny_teacher, "d0", 4, "block", dense=0)
    full = train_sfd_steps(tmp_path, tiny_teacher, "full", 4, "block")
    net = {n: p for n, p in k1.state_dict().items()}
    assert all(torch.equal(d0.state_dict()[n], p) for n, p in net.items())
    assert any(not torch.equal(full.state_dict()[n], p) for n, p in net.items())
    assert all(torch.equal(a, b) for a, b in zip(d0.heads.state_dict().values(),
                                                  widen(tiny_teacher, 4, heads="block").heads.state_dict().values()))


def test_distill_with_block_heads_records_resumes_and_exports(tmp_path, tiny_teacher_file):
    import json
    import shutil

    from bdense.distill.sfd.run import distill_sfd
    from bdense.models.checkpoint import load_model
    from bdense.models.export import export_model
    kw = dict(nfe=2, branches=2, trajectories=32, batch=8, lr=1e-3, checkpoint_every=2, progress=False,
              device="cpu", grid_seeds=2, teacher_solver="euler", teacher_substeps=2, seed=1, branch_heads="block")
    dry = distill_sfd(str(tiny_teacher_file), "unused", dry_run=True, **kw)
    assert "branch heads: block" in dry["plan"] and dry["options"]["branch_heads"] == "block"
    k1 = distill_sfd(str(tiny_teacher_file), "unused", dry_run=True, **dict(kw, branches=1))
    assert k1["options"]["branch_heads"] == "shared" and "branch heads" not in k1["plan"]
    with pytest.raises(BdenseError, match="use shared or block"):
        distill_sfd(str(tiny_teacher_file), "unused", dry_run=True, **dict(kw, branch_heads="wide"))
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "straight"), **kw)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")  # killed after its first checkpoint
    for p in sorted((tmp_path / "resumed/checkpoints").glob("state-*.safetensors"))[1:]:
        p.unlink()
    (tmp_path / "resumed/model.safetensors").unlink()
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "resumed"), resume=True, **kw)
    a, b = (load_model(tmp_path / d / "model.safetensors") for d in ("straight", "resumed"))
    assert a.config["branch_heads"] == "block" and a.config["meta"]["distill"]["branch_heads"] == "block"
    assert json.loads((tmp_path / "straight/options.json").read_text())["branch_heads"] == "block"
    sa, sb = a.state_dict(), b.state_dict()
    assert any(n.startswith("heads.0.") for n in sa) and all(torch.equal(sa[n], sb[n]) for n in sa)
    single = load_model(export_model(tmp_path / "straight/model.safetensors", tmp_path / "e.safetensors"))
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 2.0])
    with torch.no_grad():
        assert torch.equal(single(x, s)[:, 0], a(x, s)[:, -1])
    assert single.heads is None and single.net.config.out_channels == 1
