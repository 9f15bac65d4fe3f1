"""SFD's teacher, exactly: bdense's SFD teacher trajectories and SFD's sampler row agree with an independent port of
sfd-main's DPM-Solver++ (tests/sfd_port.py) to float rounding, on a shipped teacher; today's old behaviour
(no thresholding, the AFS history restarted, the 'tail' order rule) is one option away and differs measurably."""
import pytest
import torch

from bdense.distill.sfd.plan import SFDPlan, recorded_teacher, teacher_solver_options
from bdense.distill.sfd.trajectories import teacher_trajectories
from bdense.errors import BdenseError
from bdense.hosts.sfd import sfd_sampler_recipe
from bdense.models.checkpoint import load_model
from bdense.sampling.sample import generate
from bdense.seeds import seed_noise
from bdense.solvers import solve
from bdense.solvers.dpmpp import step_order
from sfd_port import network, sfd_dpmpp

SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def shipped_teacher():
    return load_model("fashion-mnist-tiny")


def close(a, b):
    """Float rounding of float32 states of size up to sigma_max = 80 (a few ulp at 80 is ~3e-5)."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def rmse(a, b):
    return float((a - b).pow(2).mean().sqrt())


@pytest.mark.parametrize("nfe", [2, 3, 4, 5])
def test_teacher_trajectories_are_sfds(shipped_teacher, nfe):
    plan = SFDPlan(nfe=nfe)  # SFD's: dpmpp_3m, order rule sfd, dynamic thresholding (AFS: none in a trajectory)
    traj, _ = teacher_trajectories(shipped_teacher, plan, SEEDS, "cpu")
    ref = sfd_dpmpp(network(shipped_teacher), traj[0], plan.grids()[1])
    assert close(traj, ref)
    raw = sfd_dpmpp(network(shipped_teacher), traj[0], plan.grids()[1], dynamic=False)
    assert rmse(ref[-1], raw[-1]) > 0.02  # thresholding is active on this teacher: the check can fail
    old = SFDPlan(nfe=nfe, teacher_threshold="none", teacher_order_rule="tail")
    assert close(teacher_trajectories(shipped_teacher, old, SEEDS, "cpu")[0], raw)  # old behaviour: one option away


@pytest.mark.parametrize("nfe", [1, 2, 3, 4, 5])
def test_sfd_sampler_row_is_sfds_with_afs(shipped_teacher, nfe):
    """compare's 'teacher dpmpp_3m N NFE' row: SFD's sampler with AFS at the student's grid (2-step grid at NFE 1)."""
    plan = SFDPlan(nfe=nfe)
    recipe = sfd_sampler_recipe(plan)
    images = torch.cat([im for _, im, _ in generate(shipped_teacher, SEEDS, recipe)])
    grid = recipe.sigmas()
    x = seed_noise(SEEDS, (1, 28, 28), "cpu") * float(grid[0])
    ref = sfd_dpmpp(network(shipped_teacher), x, grid, afs=True)[-1].clamp(-1, 1)
    assert close(images, ref)
    restart = sfd_sampler_recipe(SFDPlan(nfe=nfe, teacher_history="restart"))
    other = torch.cat([im for _, im, _ in generate(shipped_teacher, SEEDS, restart)])
    assert rmse(other, ref) > 0.01  # the AFS estimate in the history matters


def test_two_step_grids_run_orders_one_and_two(shipped_teacher):
    plan = SFDPlan(nfe=2, substeps=1, afs=False)  # a 2-step teacher grid (reachable with --teacher-substeps 1)
    traj, _ = teacher_trajectories(shipped_teacher, plan, SEEDS, "cpu")
    _, grid = plan.grids()
    assert len(grid) == 3
    assert close(traj, sfd_dpmpp(network(shipped_teacher), traj[0], grid))
    tail = SFDPlan(nfe=2, substeps=1, afs=False, teacher_order_rule="tail")
    assert rmse(teacher_trajectories(shipped_teacher, tail, SEEDS, "cpu")[0][-1], traj[-1]) > 1e-3


def test_order_rules_by_hand():
    """Orders per step (n - 1 = steps), as SFD's formula, bdense 0.1's 'tail' and dpm-solver's give them."""
    def orders(rule, steps):
        return [step_order(3, i, steps, i + 1, 1.0, rule) for i in range(steps)]
    assert orders("sfd", 2) == [1, 2] and orders("tail", 2) == [1, 1]
    assert orders("sfd", 4) == orders("tail", 4) == [1, 2, 2, 1]
    assert orders("sfd", 12) == [1, 2] + [3] * 8 + [2, 1] and orders("dpm-solver", 12) == [1, 2] + [3] * 10


def test_teacher_options_resolve_and_refuse():
    assert teacher_solver_options(SFDPlan(nfe=2)) == {"order_rule": "sfd", "threshold": "dynamic"}
    assert teacher_solver_options(SFDPlan(nfe=2), afs=True)["afs_history"] is True
    heun = SFDPlan(nfe=2, teacher_solver="heun")
    assert (heun.teacher_threshold, heun.teacher_history) == ("none", "restart") and teacher_solver_options(heun) == {}
    for kw, msg in ((dict(teacher_solver="heun", teacher_threshold="dynamic"), "applies to a dpmpp"),
                    (dict(teacher_threshold="static"), "unknown --teacher-threshold"),
                    (dict(teacher_history="keep"), "unknown --teacher-history"),
                    (dict(teacher_order_rule="sf"), "unknown --teacher-order-rule")):
        with pytest.raises(BdenseError, match=msg):
            SFDPlan(nfe=2, **kw)


def test_records_of_older_versions_mean_what_they_meant():
    """A student or cache written before SFD's exact teacher: its 'sfd' rule was today's 'tail', without
    thresholding and with the history restarted; without a rule at all it was dpm-solver's."""
    assert recorded_teacher({"teacher_solver": "dpmpp_3m", "teacher_order_rule": "sfd"}) == {
        "teacher_solver": "dpmpp_3m", "teacher_order_rule": "tail", "teacher_threshold": "none",
        "teacher_history": "restart"}
    assert recorded_teacher({"teacher_solver": "dpmpp_3m"})["teacher_order_rule"] == "dpm-solver"
    now = SFDPlan(nfe=2)
    assert recorded_teacher(vars(now)) == {k: getattr(now, k) for k in
                                           ("teacher_solver", "teacher_order_rule", "teacher_threshold",
                                            "teacher_history")}


def test_bdense_sample_gets_sfds_options_only_when_asked(shipped_teacher):
    from bdense.sampling.recipe import Recipe
    r = Recipe(solver="dpmpp_3m", nfe=3, afs=True, final_zero=False, sigma_min=0.006)
    assert r.solver_options() == {"afs": True, "order_rule": "dpm-solver", "threshold": "none", "afs_history": False}
    assert r.to_dict() == Recipe.from_dict(r.to_dict()).to_dict() and "threshold" not in r.to_dict()
    sfd = r.with_overrides(order_rule="sfd", threshold="dynamic", afs_history=True)
    assert Recipe.from_dict(sfd.to_dict()) == sfd
    with pytest.raises(BdenseError, match="threshold=dynamic, afs_history=True: only the dpmpp solvers"):
        Recipe.from_dict(dict(sfd.to_dict(), solver="heun"))
    x = seed_noise(SEEDS, (1, 28, 28), "cpu") * 80.0
    ours = solve("dpmpp_3m", shipped_teacher, x, sfd.sigmas(), **sfd.solver_options())
    assert close(ours, sfd_dpmpp(network(shipped_teacher), x, sfd.sigmas(), afs=True)[-1])


def test_every_plan_field_of_a_student_survives_into_its_reference(tmp_path, tiny_teacher_file):
    """`bdense agreement --reference distill` rebuilds the plan a student was trained with, every field of it."""
    import dataclasses
    from bdense.distill.sfd.run import distill_sfd
    from bdense.metrics.agreement import sfd_plan
    chosen = dict(nfe=1, branches=2, substeps=2, afs=False, sigma_min=0.01, sigma_max=40.0, teacher_solver="dpmpp_2m",
                  teacher_order_rule="tail", teacher_threshold="none", teacher_history="restart")
    default = SFDPlan(nfe=2)
    settable = {f.name for f in dataclasses.fields(SFDPlan)} - {"rho"}  # rho is fixed at 7 (SFD's, not an option)
    assert set(chosen) == settable and all(getattr(default, k) != v for k, v in chosen.items())
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "s"), nfe=1, branches=2, teacher_substeps=2, afs=False,
                sigma_min=0.01, sigma_max=40.0, teacher_solver="dpmpp_2m", teacher_order_rule="tail",
                teacher_threshold="none", teacher_history="restart", trajectories=8, batch=8, progress=False,
                device="cpu", grid_seeds=1)
    plan = sfd_plan(load_model(tmp_path / "s" / "model.safetensors"))
    assert plan == SFDPlan(**chosen)
