"""Progressive distillation host: VP targets, K = 1 == plain PD, B-DENSE midpoint, rounds, exact resume, CLI plan."""
import math

import pytest
import torch

from bdense.data.datasets import ImageData
from bdense.distill.pd.plan import PDPlan
from bdense.distill.pd.task import PDTask, ddim_step, ddim_x_target, pd_targets, vp_coeffs, x_hat
from bdense.distill.weights import ConstantWeights
from bdense.errors import BdenseError
from bdense.models.branches import widen
from bdense.models.factory import new_model
from bdense.sampling.recipe import Recipe
from bdense.train.loop import TrainConfig, Trainer
from bdense.train.rundir import RunDir


def _teacher(seed=0):
    torch.manual_seed(seed)
    return new_model("x", 1, 8, preset="tiny").eval()


def _data(n=16, seed=1, const=None):
    g = torch.Generator().manual_seed(seed)
    im = torch.full((n, 1, 8, 8), const) if const is not None else torch.rand((n, 1, 8, 8), generator=g) * 2 - 1
    return ImageData(im, None, 0, "rand")


def _trainer(path, task, steps, lr=1e-3, resume=False):
    cfg = TrainConfig(steps=steps, lr=lr, lr_schedule="linear", grad_clip=1.0, device="cpu", progress=False,
                      log_every=1000, seed=3)
    return Trainer(task, RunDir(path, {"test": "pd"}, resume=resume), cfg)


def test_round_schedule_recipe_and_refusals():
    plan = PDPlan(64, 8, 2, 200)
    assert plan.rounds == [32, 16, 8] and plan.total_iters == 600
    assert PDPlan(2, 1, 1, 5).rounds == [1]
    # the student samples exactly on its last round's grid t = i/N, then steps to sigma 0
    for n in (8, 1):
        p = PDPlan(2 * n, n, 2, 1)
        got = Recipe.from_dict(p.recipe()).sigmas()
        want = [p.sigma(i / n) for i in range(n, 0, -1)] + [0.0]
        assert len(got) == n + 1 and torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9)
    for bad in [dict(branches=3), dict(branches=0), dict(start_steps=48), dict(start_steps=8, end_steps=8),
                dict(start_steps=4, end_steps=8), dict(end_steps=0), dict(round_iters=0)]:
        with pytest.raises(BdenseError) as e:
            PDPlan(**{**dict(start_steps=64, end_steps=8, branches=2, round_iters=10), **bad})
        assert "\n" not in str(e.value)


def test_x_target_round_trip():
    """One DDIM step from z_t with x-hat = x~ lands on the target state (z' or z'')."""
    g = torch.Generator().manual_seed(0)
    z, z2 = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    plan = PDPlan()
    t = torch.tensor([1.0, 0.9, 0.5, 0.25, 1 / 64, 3 / 64], dtype=torch.float64)
    for dt in (0.5 / 64, 1 / 64):
        s, s2 = plan.sigma(t), plan.sigma(t - dt)
        x = ddim_x_target(z, z2, s, s2)
        assert torch.allclose(ddim_step(z, x, s, s2), z2, atol=2e-5)


def test_midpoint_target_is_teacher_prediction_at_init():
    """METHOD 5: branch 1's target (z' via the x~ formula) equals the teacher's x-prediction at z_t; at init
    (student = widen(teacher, 2)) branch 1's loss is therefore ~0 while branch 2's is not."""
    teacher, plan = _teacher(), PDPlan(16, 4, 2, 1)
    student = widen(teacher, 2).eval()
    g = torch.Generator().manual_seed(2)
    x, eps = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, torch.randn(8, 1, 8, 8, generator=g)
    n = 8
    t = torch.arange(1, 9, dtype=torch.float64) / n
    a, s = vp_coeffs(plan.sigma(t))
    z = a.float() * x + s.float() * eps
    target, sig = pd_targets(teacher, z, t, n, plan, 2)
    with torch.no_grad():
        xt = x_hat(teacher, z, sig[0])[:, 0]
        xs = x_hat(student, z, sig[0])
    assert torch.allclose(target[:, 0], xt, atol=1e-4)
    err1 = (xs[:, 0] - target[:, 0]).pow(2).mean().item()
    err2 = (xs[:, 1] - target[:, 1]).pow(2).mean().item()
    assert err1 < 1e-8 < 1e-3 < err2


def _plain_pd_reference(teacher, student, data, n, batch, lr, seed):
    """Salimans & Ho's step written directly on the network, log-SNR coefficients, torch Adam + clip."""
    A0, B0 = math.atan(math.exp(10)) - math.atan(math.exp(-10)), math.atan(math.exp(-10))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(data), (batch,), generator=g)
    eps = torch.randn((batch, 1, 8, 8), generator=g)
    i = torch.randint(1, n + 1, (batch,), generator=g)
    x = data.images[idx]

    def coef(t):  # lambda(t) = -2 log tan(A t + B); alpha^2 = sigmoid(lambda)
        lam = -2 * torch.log(torch.tan(A0 * t + B0))
        return torch.sigmoid(lam).sqrt().view(-1, 1, 1, 1).float(), torch.sigmoid(-lam).sqrt().view(-1, 1, 1, 1).float()

    def xpred(model, z, t):
        return model.net(z, (1000 * t).float()).sample

    t = i.double() / n
    a, s = coef(t)
    z = a * x + s * eps
    with torch.no_grad():
        a1, s1 = coef(t - 0.5 / n)
        a2, s2 = coef(t - 1.0 / n)
        xt = xpred(teacher, z, t)
        z1 = a1 * xt + s1 * (z - a * xt) / s
        xt1 = xpred(teacher, z1, t - 0.5 / n)
        z2 = a2 * xt1 + s2 * (z1 - a1 * xt1) / s1
        target = (z2 - (s2 / s) * z) / (a2 - (s2 / s) * a)
        target = torch.where((i == 1).view(-1, 1, 1, 1), xt1, target)  # the reference's last step: teacher's x
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    pred = xpred(student, z, t)
    w = torch.clamp(a**2 / s**2, min=1.0)
    loss = (w * (pred - target) ** 2).flatten(1).mean(1).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    return loss.item()


def test_k1_is_plain_progressive_distillation(tmp_path):
    """Same loss, and the same clipped gradient entry by entry, as Salimans & Ho's step written on the network.
    (Weights after one Adam step cannot show a difference: Adam's first step is lr * sign(g) wherever |g| >> eps,
    whatever the gradient's size, so the gradient itself is compared.)"""
    teacher, data = _teacher(), _data()
    ref_student = widen(teacher, 1)
    ref_loss = _plain_pd_reference(_teacher(), ref_student, data, n=4, batch=8, lr=1e-3, seed=3)
    task = PDTask(teacher, widen(teacher, 1), PDPlan(8, 4, 1, 10), data, ConstantWeights((1.0,)), batch=8)
    grads = {}
    for name, p in task.model.named_parameters():
        p.register_hook(lambda g, name=name: grads.__setitem__(name, g.detach().clone()))
    out = _trainer(tmp_path, task, steps=1).run()
    assert out["loss/b1"] == pytest.approx(ref_loss, rel=1e-5)
    ref = dict(ref_student.named_parameters())  # .grad there is after clip_grad_norm_(1.0)
    norm = torch.cat([g.flatten() for g in grads.values()]).norm()
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))
    assert grads.keys() == ref.keys() and norm > 0
    ours = torch.cat([grads[k].flatten() * scale for k in ref])
    theirs = torch.cat([ref[k].grad.flatten() for k in ref])
    assert (ours - theirs).norm() <= 1e-4 * theirs.norm(), ((ours - theirs).norm(), theirs.norm())


def test_losses_vanish_when_the_student_can_match_the_teacher(tmp_path):
    """A perfect teacher (one constant image, x-prediction = that image) makes every target the image itself;
    a perturbed student learns it back and both branch losses go to ~0."""
    teacher = _teacher()
    with torch.no_grad():
        teacher.net.conv_out.weight.zero_()
        teacher.net.conv_out.bias.fill_(0.3)
    data, plan = _data(4, const=0.3), PDPlan(4, 2, 2, 60)
    z = torch.randn(4, 1, 8, 8)
    target, _ = pd_targets(teacher, z, torch.tensor([0.5, 1.0, 0.5, 1.0], dtype=torch.float64), 2, plan, 2)
    assert torch.allclose(target, torch.full_like(target, 0.3), atol=1e-4)
    student = widen(teacher, 2)
    with torch.no_grad():
        student.net.conv_out.weight.add_(torch.randn_like(student.net.conv_out.weight) * 0.02)
    task = PDTask(teacher, student, plan, data, ConstantWeights((1.0, 1.0)), batch=8)
    tr = _trainer(tmp_path, task, steps=60, lr=3e-3)
    start = task.train_step(tr, 0)  # one extra step to read the starting losses
    end = tr.run()
    print(f"\n[pd] perfect teacher: start {start}, end {end}")
    assert start["loss/b2"] > 1e-3
    assert end["loss/b1"] < 2e-2 * start["loss/b1"] and end["loss/b2"] < 2e-2 * start["loss/b2"], (start, end)


def _resume_task():
    teacher = _teacher()
    return PDTask(teacher, widen(teacher, 2), PDPlan(8, 2, 2, 3), _data(), ConstantWeights((1.0, 2.0)), batch=4)


@pytest.mark.parametrize("split", [3, 4])
def test_resume_is_bit_exact_across_rounds(tmp_path, split):
    straight = _resume_task()
    _trainer(tmp_path / "a", straight, steps=6).run()
    assert straight.round == 1
    part = _resume_task()
    _trainer(tmp_path / "b", part, steps=split).run()
    resumed = _resume_task()
    _trainer(tmp_path / "b", resumed, steps=6, resume=True).run(resume=True)
    for name, a, b in [("student", straight.model, resumed.model), ("teacher", straight.teacher, resumed.teacher)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert not torch.equal(straight.teacher.net.conv_out.weight, _teacher().net.conv_out.weight)


@pytest.fixture
def vp_teacher_file(tmp_path):
    from bdense.models.checkpoint import save_model
    torch.manual_seed(0)
    return save_model(tmp_path / "vp.safetensors", new_model("x", 1, 8, preset="tiny", data="digits"))


def test_dry_run_plan_and_refusals(tmp_path, vp_teacher_file, tiny_teacher_file):
    from bdense.distill.pd.run import distill_pd
    res = distill_pd(str(vp_teacher_file), str(tmp_path / "dry"), start_steps=64, end_steps=8, round_iters=200,
                     branches=2, dry_run=True)
    plan = res["plan"]
    for line in ["K=2", "x-prediction", "round 1/3: teacher 64 DDIM steps -> student 32 steps", "round 3/3",
                 "branch 1 -> teacher z at t - 0.5/32", "branch 2 -> teacher z at t - 1/8", "3 rounds x 200 = 600",
                 "weights uniform (at start [1.0, 1.0]"]:
        assert line in plan, line
    assert not (tmp_path / "dry").exists() and res["options"]["steps"] == 600
    # round_iters was given, so the plan names only lr and batch as the studied defaults it used
    defaults = plan.split("studied defaults, used for options left out: ")[1]
    assert "lr 0.0003 (" in defaults and "batch 32 (" in defaults and "round_iters" not in defaults, defaults
    bad = [dict(branches=3), dict(start_steps=64, end_steps=6), dict(branches=2, branch_weights="1,2,3"),
           dict(branches=2, branch_weights="end:2")]
    for kw in bad:
        with pytest.raises(BdenseError):
            distill_pd(str(vp_teacher_file), str(tmp_path / "bad"), dry_run=True, **kw)
    with pytest.raises(BdenseError, match="VP teacher"):
        distill_pd(str(tiny_teacher_file), str(tmp_path / "edm"), dry_run=True)


def test_distill_pd_end_to_end_writes_a_sampling_student(tmp_path, vp_teacher_file):
    from bdense.distill.pd.run import distill_pd
    from bdense.models.checkpoint import load_model
    from bdense.sampling.sample import model_recipe
    out = tmp_path / "run"
    res = distill_pd(str(vp_teacher_file), str(out), start_steps=4, end_steps=1, round_iters=2, batch=8,
                     branches=2, device="cpu", progress=False, grid_seeds=4)
    assert res["completed"] and {"loss/b1", "loss/b2"} <= set(res)
    student = load_model(out / "model.safetensors")
    r = model_recipe(student)
    assert (r.solver, r.nfe, r.schedule, r.final_zero) == ("euler", 1, "time-uniform", True)
    assert student.config["meta"]["distill"]["rounds"] == [2, 1] and (out / "samples.png").exists()
    log = (out / "log.txt").read_text()
    assert "round 2/2: teacher 2 DDIM steps -> student 1 steps" in log and "round 2 done" in log


def test_random_flip_flips_half_the_images_and_nothing_else(tmp_path):
    """--random-flip (PD's reference flips CIFAR-10): on mirror-symmetric data it changes nothing, bit for bit (the
    flips are drawn after every other draw); on other data it changes the run; the data set's flipped copy with
    and the same seed gives the same run."""
    def run(data, flip, name):
        task = PDTask(_teacher(), widen(_teacher(), 1), PDPlan(8, 4, 1, 10), data, ConstantWeights((1.0,)), batch=8,
                      random_flip=flip)
        return _trainer(tmp_path / name, task, steps=1).run()["loss/b1"]
    sym = _data()
    sym.images = (sym.images + sym.images.flip(-1)) / 2
    assert run(sym, True, "a") == run(sym, False, "b")
    asym = _data()
    assert run(asym, True, "c") != run(asym, False, "d")
    assert run(asym, True, "e") == run(asym, True, "f")


def test_distill_pd_defaults_to_k1_and_warns_for_k2(tmp_path, vp_teacher_file):
    """The confirmation (docs/confirmation.md) found K = 2 family-wise worse than K = 1 for PD: the CLI's default is
    K = 1, with the studied budget (500 iterations a round, lr 3e-4), and K = 2 says so when asked for."""
    from typer.testing import CliRunner
    from bdense.cli import app
    run = CliRunner().invoke
    r = run(app, ["distill", "--method", "pd", "--teacher", str(vp_teacher_file), "--out", str(tmp_path / "a"),
                  "--dry-run"])
    assert r.exit_code == 0 and "K=1" in r.output and "note:" not in r.output, r.output
    assert "round_iters 500" in r.output and "lr 0.0003" in r.output, r.output
    r = run(app, ["distill", "--method", "pd", "--teacher", str(vp_teacher_file), "--out", str(tmp_path / "b"),
                  "--dry-run", "--branches", "2"])
    assert r.exit_code == 0 and "K=2" in r.output and "K = 1 is recommended" in r.output, r.output
    r = run(app, ["distill", "--method", "pd", "--teacher", str(vp_teacher_file), "--out", str(tmp_path / "c"),
                  "--dry-run", "--branches", "4"])  # refused: the refusal alone, no note about K = 2 before it
    assert "takes --branches 1 (plain PD) or 2" in str(r.exception) and "note:" not in r.output, r.output
