"""Branch target modes (teacher / anchored / anchored-log / on-policy), SFD's teacher order rule, fresh pools."""
import math

import pytest
import torch

from bdense.distill.sfd.cache import TrajectoryCache, write_cache
from bdense.distill.sfd.plan import SFDPlan
from bdense.distill.sfd.task import SFDTask
from bdense.distill.sfd.targets import DEFAULT_TARGETS, DEFAULT_WEIGHTS, TARGET_MODES, closing_factors, interval_targets
from bdense.distill.sfd.trajectories import teacher_steps, teacher_trajectories
from bdense.distill.weights import ConstantWeights, parse_weights
from bdense.errors import BdenseError
from bdense.studies.compare import Setting
from bdense.io import file_digest
from bdense.models.branches import widen
from bdense.solvers import solve
from bdense.solvers.common import denoise, euler_step
from bdense.solvers.dpmpp import step_order
from bdense.train.loop import TrainConfig, Trainer
from bdense.train.rundir import RunDir

from gaussian import GaussianDenoiser
from sfd_steps import train_sfd_steps


def _interval(plan, traj, i):
    s, t = plan.grids()
    idx = [plan.target_index(i, k) for k in range(1, plan.branches + 1)]
    return idx, float(s[i]), float(s[i + 1]), [float(t[j]) for j in idx]


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_every_mode_equals_teacher_targets_from_the_teachers_own_state(tiny_teacher, mode):
    plan = SFDPlan(nfe=2, branches=4, teacher_solver="euler")
    traj, _ = teacher_trajectories(tiny_teacher, plan, [0, 1, 2], "cpu")
    idx, t0, t1, sig = _interval(plan, traj, 1)
    start = plan.substeps
    rerun = lambda x, n: teacher_steps(tiny_teacher, plan, x, plan.grids()[1][start:start + n + 1])  # noqa: E731
    got = interval_targets(mode, traj[start], traj, start, idx, t0, t1, sig, rerun)
    assert torch.allclose(got, traj[idx].transpose(0, 1), atol=1e-6, rtol=0)
    if mode != "on-policy":  # closed form: a zero offset adds exactly zero
        assert torch.equal(got, traj[idx].transpose(0, 1))


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_endpoint_target_is_the_teachers_in_every_mode_and_anchoring_is_linear(tiny_teacher, mode):
    plan = SFDPlan(nfe=2, branches=4, teacher_solver="euler")
    traj, _ = teacher_trajectories(tiny_teacher, plan, [0, 1], "cpu")
    idx, t0, t1, sig = _interval(plan, traj, 1)
    start = plan.substeps
    x = traj[start] + 0.3 * torch.randn_like(traj[start])
    rerun = lambda x0, n: teacher_steps(tiny_teacher, plan, x0, plan.grids()[1][start:start + n + 1])  # noqa: E731
    got = interval_targets(mode, x, traj, start, idx, t0, t1, sig, rerun)
    assert torch.equal(got[:, -1], traj[idx[-1]])
    if mode.startswith("anchored"):
        f = closing_factors(mode, t0, t1, sig)
        assert f[-1] == 0 and all(1 > a > b for a, b in zip(f, f[1:]))
        for k in range(3):  # the offset left at branch k is f_k times the start offset
            assert torch.allclose(got[:, k] - traj[idx[k]], f[k] * (x - traj[start]), atol=1e-6)
    if mode == "anchored":
        assert f[0] == pytest.approx((sig[0] - t1) / (t0 - t1))
    if mode == "anchored-log":
        assert f[0] == pytest.approx(math.log(sig[0] / t1) / math.log(t0 / t1))
    if mode == "on-policy":  # Euler teacher: branch 1 = one teacher Euler step from the student's own x
        one = euler_step(x, denoise(tiny_teacher, x, t0), t0, sig[0])
        assert torch.allclose(got[:, 0], one, atol=1e-6)


@pytest.mark.parametrize("mode", TARGET_MODES)
def test_k1_is_the_same_run_bit_for_bit_in_every_mode(tmp_path, tiny_teacher, mode):
    plan = SFDPlan(nfe=2, branches=1, teacher_solver="dpmpp_3m")
    weights = {}
    for m in ("teacher", mode):
        student = widen(tiny_teacher, 1).train()
        task = SFDTask(tiny_teacher, student, plan, ConstantWeights((1.0,)), batch=4, seed=0, targets=m)
        tr = Trainer(task, RunDir(tmp_path / m, {}), TrainConfig(steps=2, lr=1e-3, progress=False, device="cpu"))
        [task.train_step(tr, it) for it in range(2)]
        weights[m] = student.state_dict()
    for k, v in weights["teacher"].items():
        assert torch.equal(v, weights[mode][k]), k


def test_unknown_mode_is_refused():
    with pytest.raises(BdenseError, match="--branch-targets"):
        Setting.parse("x:4:uniform:targets=student")


def test_sfd_order_rule_sequence():
    """SFD's DPM-Solver++(3M) teacher: step i has order min(3, i + 1, steps - i) on every grid."""
    for steps in (4, 8, 12, 20):
        sfd = [step_order(3, i, steps, min(i + 1, 3), 1.0, "sfd") for i in range(steps)]
        assert sfd == [min(3, i + 1, steps - i) for i in range(steps)]
        dpm = [step_order(3, i, steps, min(i + 1, 3), 1.0, "dpm-solver") for i in range(steps)]
        assert dpm == ([min(3, i + 1, steps - i) for i in range(steps)] if steps < 10
                       else [min(3, i + 1) for i in range(steps)])
    # and the solver really takes them: with the SFD rule the last step of a 12-step grid is an Euler step
    den = GaussianDenoiser()
    x = den.sample_prior(3, 80.0)
    sig = SFDPlan(nfe=2).grids()[1]
    traj = solve("dpmpp_3m", den, x, sig, return_trajectory=True, order_rule="sfd")
    last = euler_step(traj[-2], denoise(den, traj[-2], float(sig[-2])), float(sig[-2]), float(sig[-1]))
    assert torch.allclose(traj[-1], last, rtol=0, atol=1e-12)
    old = solve("dpmpp_3m", den, x, sig, return_trajectory=True, order_rule="dpm-solver")
    assert torch.equal(old[:10], traj[:10]) and not torch.allclose(old[-1], traj[-1], atol=1e-6)


def test_plan_uses_sfds_teacher_by_default(tiny_teacher):
    plan = SFDPlan(nfe=2)
    assert (plan.teacher_order_rule, plan.teacher_threshold, plan.teacher_history) == ("sfd", "dynamic", "afs")
    a, _ = teacher_trajectories(tiny_teacher, plan, [5], "cpu")
    b = solve("dpmpp_3m", tiny_teacher, a[0], plan.grids()[1], return_trajectory=True, order_rule="sfd",
              threshold="dynamic")
    assert torch.equal(a, b)  # tests/test_sfd_teacher.py checks this against an independent port of SFD's sampler


def test_fresh_pool_cache_serves_its_own_noise_seeds(tmp_path, tiny_teacher, tiny_teacher_file):
    plan = SFDPlan(nfe=1, substeps=2, teacher_solver="euler")
    path = write_cache(tiny_teacher, file_digest(tiny_teacher_file), plan, 8, tmp_path / "c", batch=4,
                       shard_size=4, progress=False, first_seed=100)
    cache = TrajectoryCache.open(path, plan=plan)
    got, _ = cache.batch([107, 100], "cpu")
    ref, _ = teacher_trajectories(tiny_teacher, plan, [107, 100], "cpu")
    assert torch.allclose(got, ref, rtol=0, atol=1e-4)  # the cache ran batches of 4: same seeds, same states
    with pytest.raises(BdenseError, match="not all in the cache"):
        cache.batch([99], "cpu")


def test_setting_grammar():
    s = Setting.parse("ramp:4:ramp:targets=anchored")
    assert (s.branches, s.weights, s.targets) == (4, "ramp", "anchored")
    s = Setting.parse("sched:4:decay:cosine:0:0.2-0.8:targets=teacher:dropout=0.1")
    assert (s.weights, s.targets, s.dropout) == ("decay:cosine:0:0.2-0.8", "teacher", 0.1)
    assert Setting.parse("a:4:targets=anchored-log").weights is None
    assert parse_weights("ramp", 4).at(0, 1) == [0.25, 0.5, 0.75, 1.0]
    for bad in ("a:4:uniform:color=red", "a:4:dropout=1.5", "a:4:dropout=x"):
        with pytest.raises(BdenseError):
            Setting.parse(bad)


def test_student_dropout_is_recorded_and_only_acts_in_training(tiny_teacher):
    student = widen(tiny_teacher, 2, dropout=0.5)
    assert student.config["net"]["dropout"] == 0.5
    x, s = torch.randn(2, 1, 8, 8), torch.full((2,), 1.0)
    with torch.no_grad():
        assert torch.equal(student.eval()(x, s)[:, -1], tiny_teacher(x, s)[:, -1])
        torch.manual_seed(0)
        assert not torch.equal(student.train()(x, s)[:, -1], tiny_teacher(x, s)[:, -1])


def test_dry_run_names_the_targets_and_their_factors(tiny_teacher_file):
    from bdense.distill.sfd.run import distill_sfd
    res = distill_sfd(str(tiny_teacher_file), "unused", nfe=2, branches=4, branch_weights="ramp",
                      branch_targets="anchored", dry_run=True)
    assert "targets anchored" in res["plan"] and "f = 0." in res["plan"] and "order rule sfd" in res["plan"]
    assert res["options"]["branch_targets"] == "anchored" and res["options"]["teacher_order_rule"] == "sfd"
    k1 = distill_sfd(str(tiny_teacher_file), "unused", nfe=2, branches=1, dry_run=True)
    assert "K = 1" in k1["plan"] and k1["options"]["branch_weights"]["spec"] == "uniform"
    default = distill_sfd(str(tiny_teacher_file), "unused", nfe=2, branches=4, dry_run=True)["options"]
    assert default["branch_weights"]["spec"] == DEFAULT_WEIGHTS and default["branch_targets"] == DEFAULT_TARGETS


def test_dense_intervals_limit_the_intermediate_branches_to_the_first_intervals(tmp_path, tiny_teacher):
    """dense_intervals = 0 trains only the endpoint: the same student as K = 1 (up to float summation order);
    N at least the number of trained intervals is the default run bit for bit; N = 1 at NFE 3 is neither."""
    x, s = torch.randn(3, 1, 8, 8), torch.full((3,), 2.0)
    out = {}
    for name, k, dense in (("k1", 1, None), ("d0", 4, 0), ("d1", 4, 1), ("d3", 4, 3), ("dall", 4, None)):
        student = train_sfd_steps(tmp_path, tiny_teacher, name, k, dense=dense)
        with torch.no_grad():
            out[name] = student(x, s)[:, -1]
    k1, d0, d1, d3, dall = (out[n] for n in ("k1", "d0", "d1", "d3", "dall"))
    assert torch.allclose(d0, k1, atol=1e-5, rtol=1e-5)
    assert torch.equal(d3, dall)  # NFE 3 with AFS trains 3 intervals
    assert (d1 - dall).abs().max() > 1e-4 and (d1 - k1).abs().max() > 1e-4
    s = Setting.parse("late:4:ramp:dense=1")
    assert s.distill_options()["dense_intervals"] == 1
    with pytest.raises(BdenseError):
        Setting.parse("late:4:dense=-1")
