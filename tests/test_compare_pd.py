"""compare --method pd: K = 1 is a plain `distill --method pd` run bit for bit, per-round rows, reuse; and the
reference-closer PD options (clipped sampling, the last-step target, weight schedules that restart each round)."""
import json

import pytest
import torch

from bdense.distill.pd.plan import PDPlan
from bdense.distill.pd.task import ddim_step, pd_targets, vp_coeffs, x_hat
from bdense.distill.weights import parse_weights
from bdense.errors import BdenseError
from bdense.studies.compare import CompareConfig, Setting, compare
from bdense.models.factory import new_model
from bdense.sampling.recipe import Recipe
from bdense.sampling.sample import generate

PD = dict(method="pd", start_steps=8, end_steps=2, round_iters=4, batch=8, lr=1e-3, eval_points=(0.5, 1.0),
          eval_seeds=16, seeds=1, progress=False, device="cpu")


@pytest.fixture(scope="module")
def vp_digits(tmp_path_factory, digits_assets):
    from bdense.models.checkpoint import save_model
    d = tmp_path_factory.mktemp("vp-digits")
    torch.manual_seed(0)
    teacher = save_model(d / "vp.safetensors", new_model("v", 1, 8, preset="tiny", data="digits").eval())
    return str(teacher), digits_assets[1]


def test_compare_pd_k1_is_plain_distill_and_rows_per_round(vp_digits, tmp_path):
    from bdense.distill.pd.run import distill_pd
    from bdense.metrics.agreement import image_agreement
    from bdense.models.checkpoint import load_model
    from bdense.sampling.sample import model_recipe
    teacher, features = vp_digits
    cfg = CompareConfig(teacher, str(tmp_path / "cmp"), settings=(Setting("baseline", 1), Setting("bdense", 2)),
                        features=features, **PD)
    r = compare(cfg)
    plain = tmp_path / "plain"
    distill_pd(teacher, str(plain), branches=1, start_steps=8, end_steps=2, round_iters=4, batch=8, lr=1e-3, seed=0,
               device="cpu", progress=False, grid_seeds=4)
    ours = load_model(tmp_path / "cmp/runs/baseline/seed0/model.safetensors").state_dict()
    ref = load_model(plain / "model.safetensors").state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)  # bit for bit
    # a row per round (student steps 4, then 2), each with its snapshots at 50% and 100% of the round
    assert list(r["steps"]) == ["4", "2"] and r["host"]["method"] == "pd"
    for n, entry in r["steps"].items():
        assert set(entry["runs"]) == {"baseline", "bdense"} and entry["steps_total"] == 4
        assert entry["teacher"]["teacher DDIM 8 steps"]["rmse"] == 0.0
        assert entry["teacher"][f"teacher DDIM {2 * int(n)} steps"]["rmse2n"] == 0.0
        for per_seed in entry["runs"].values():
            assert set(per_seed[0]["evals"]) == {2, 4}
            assert {"rmse", "rmse2n", "psnr", "fid"} <= set(per_seed[0]["evals"][4])
    saved = json.loads((tmp_path / "cmp/results.json").read_text())
    assert saved["steps"]["2"]["runs"]["bdense"]["0"]["evals"]["4"]["rmse2n"] > 0
    # the last round's final rmse, measured here by hand: the plain student against the teacher's 8-step DDIM
    seeds = list(range(10**12, 10**12 + 16))
    student = load_model(plain / "model.safetensors")
    rec = model_recipe(student)
    assert rec.clip_denoised and rec.nfe == 2
    a = torch.cat([im for _, im, _ in generate(student, seeds, rec)])
    b = torch.cat([im for _, im, _ in generate(load_model(teacher), seeds, Recipe(**dict(rec.to_dict(), nfe=8,
                   sigma_min=PDPlan(sigma_min=student.sigma_min, sigma_max=student.sigma_max).sigma(1 / 8))))])
    want = image_agreement([(a, b)])["rmse"]
    assert r["steps"]["2"]["runs"]["baseline"][0]["evals"][4]["rmse"] == pytest.approx(want, rel=1e-5)
    text = (tmp_path / "cmp/report.md").read_text()
    assert "### steps 4" in text and "### steps 2" in text and "RMSE to teacher DDIM 2N" in text
    # per-branch losses per round (SFD's loss/iI/bK keys, I = the round): one series per branch per round
    from bdense.studies.branches import read_branch_losses
    assert "![branch_losses_pd.png](branch_losses_pd.png)" in text
    assert (tmp_path / "cmp/branch_losses_pd.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (tmp_path / "cmp/runs/bdense/seed0/metrics.jsonl").read_text().splitlines()]
    losses = read_branch_losses(tmp_path / "cmp/runs/bdense/seed0")
    assert set(losses) == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert set(read_branch_losses(tmp_path / "cmp/runs/baseline/seed0")) == {(1, 1), (2, 1)}
    for (r, b), (steps, vals) in losses.items():  # the round's rows, each the loss of that branch at that step
        assert steps and all(row["loss/b%d" % b] == v for row in rows for st, v in zip(steps, vals)
                             if row["step"] == st) and {(st - 1) // 4 + 1 for st in steps} == {r}
    model = tmp_path / "cmp/runs/bdense/seed0/model.safetensors"
    stamp = model.stat().st_mtime_ns
    compare(cfg)  # finished runs are reused, not retrained
    assert model.stat().st_mtime_ns == stamp
    with pytest.raises(BdenseError, match=r"other options \(round_iters\)"):
        compare(CompareConfig(teacher, str(tmp_path / "cmp"), settings=(Setting("baseline", 1),), features=features,
                              **dict(PD, round_iters=2)))


def test_compare_pd_refuses_sfd_settings_and_edm_teachers(vp_digits, digits_assets, tmp_path):
    teacher, features = vp_digits
    for bad in (Setting.parse("anch:2:uniform:targets=anchored"), Setting("four", 4)):
        with pytest.raises(BdenseError):
            CompareConfig(teacher, str(tmp_path / "x"), settings=(Setting("baseline", 1), bad), **PD)
    with pytest.raises(BdenseError, match="VP teacher"):
        compare(CompareConfig(digits_assets[0], str(tmp_path / "y"), settings=(Setting("baseline", 1),),
                              features=features, **PD))


class _Steep(torch.nn.Module):
    """D(x, sigma) = k x / sigma: k = 3 at high noise (x-prediction far outside [-1, 1]), 0.05 at low noise (inside)."""
    channels, resolution, num_classes = 1, 4, 0

    def forward(self, x, sigma, label=None):
        k = torch.where(sigma > 10, 3.0, 0.05).view(-1, 1, 1, 1)
        return (k * x / sigma.view(-1, 1, 1, 1))[:, None]


def test_clip_denoised_clamps_every_step_in_closed_form():
    rec = Recipe(solver="euler", nfe=2, schedule="time-uniform", sigma_min=0.5, sigma_max=20.0, final_zero=True)
    s = rec.sigmas().tolist()
    from bdense.seeds import seed_noise
    x0 = seed_noise([7], (1, 4, 4), "cpu") * s[0]
    d0 = (3 * x0 / s[0]).clamp(-1, 1)
    x1 = x0 + (s[1] - s[0]) * (x0 - d0) / s[0]
    want = (0.05 * x1 / s[1]).clamp(-1, 1)  # the last step lands on the (clipped) x-prediction
    from dataclasses import replace
    got = next(generate(_Steep(), [7], replace(rec, clip_denoised=True)))[1]
    plain = next(generate(_Steep(), [7], rec))[1]
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(plain, want, atol=1e-2)
    # files written without the field stay readable by older versions: it is left out when off
    assert "clip_denoised" not in rec.to_dict() and Recipe.from_dict(replace(rec, clip_denoised=True).to_dict()).clip_denoised
    with pytest.raises(BdenseError):
        Recipe.from_dict(dict(rec.to_dict(), clip_denoised="yes"))


def test_last_step_target_is_the_teacher_x_prediction_at_the_midpoint():
    torch.manual_seed(0)
    teacher = new_model("v", 1, 8, preset="tiny").eval()
    n = 4
    ref, old = (PDPlan(8, 4, 2, 1, sigma_min=0.05, sigma_max=teacher.sigma_max, last_step_target=m)
                for m in ("x-pred", "ddim"))
    t = torch.tensor([1 / n, 2 / n, 1 / n, 1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 1, 8, 8, generator=g) * vp_coeffs(ref.sigma(t))[1].float()
    got, sig = pd_targets(teacher, z, t, n, ref, 2)
    before, _ = pd_targets(teacher, z, t, n, old, 2)
    with torch.no_grad():
        z1 = ddim_step(z, x_hat(teacher, z, sig[0])[:, 0], sig[0], sig[1])
        x1 = x_hat(teacher, z1, sig[1])[:, 0]
    last = t * n == 1
    assert torch.allclose(got[last, 1], x1[last], atol=1e-6)  # endpoint branch at t = 1/N: the teacher's x
    assert torch.equal(got[~last], before[~last]) and torch.equal(got[:, 0], before[:, 0])  # elsewhere unchanged
    assert (before[last, 1] - x1[last]).abs().max() > 1e-3  # the x~ formula towards sigma_min is another target


def test_branch_weight_schedules_restart_every_round():
    w = parse_weights("decay:linear:0", 2)
    per_round, over_all = PDPlan(16, 2, 2, 10), PDPlan(16, 2, 2, 10, weight_span="all")
    for step in (0, 10, 20):  # the first iteration of each of the 3 rounds
        assert w.at(*per_round.weight_position(step)) == w.at(0, 10)
    assert w.at(*per_round.weight_position(9)) == w.at(9, 10)
    assert w.at(*over_all.weight_position(20)) == w.at(20, 30) != w.at(0, 30)
    with pytest.raises(BdenseError):
        PDPlan(16, 2, 2, 10, weight_span="epoch")
