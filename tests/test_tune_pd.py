"""bdense tune --method pd: a trial is a plain `distill --method pd` run (bit for bit), scored at --end-steps against
the teacher's DDIM at --start-steps on the tuning seeds; the study, the final `compare --method pd` and the report."""
import json

import optuna
import pytest
import torch

from bdense.errors import BdenseError
from bdense.studies.tune import Tuner
from bdense.studies.tune_plan import TuneConfig
from bdense.models.factory import new_model

optuna.logging.set_verbosity(optuna.logging.WARNING)
PD = ["--start-steps", "8", "--end-steps", "2", "--round-iters", "4", "--batch", "8", "--lr", "1e-3",
      "--tune-seeds", "16", "--report-points", "0.5,1.0"]


@pytest.fixture(scope="module")
def eps_digits(tmp_path_factory, digits_assets):
    """An eps teacher: its students are converted to v (--student-param auto), so trials exercise that too."""
    from bdense.models.checkpoint import save_model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("eps-digits") / "eps.safetensors"
    return str(save_model(path, new_model("eps", 1, 8, preset="tiny", data="digits").eval())), digits_assets[1]


def _cfg(teacher, features, out, **kw):
    base = dict(method="pd", start_steps=8, end_steps=2, round_iters=4, trial_round_iters=2, batch=8, lr=1e-3,
                tune_seeds=16, eval_seeds=16, report_points=(0.5, 1.0), eval_points=(1.0,), features=features,
                final=False, progress=False, device="cpu")
    return TuneConfig(teacher, str(out), **dict(base, **kw))


def test_a_pd_trial_is_a_plain_distill_run_scored_at_the_end_steps(eps_digits, tmp_path, keep_trial_weights):
    from bdense.distill.pd.run import distill_pd
    from bdense.metrics.agreement import image_agreement
    from bdense.models.checkpoint import load_model
    from bdense.sampling.sample import generate, model_recipe
    teacher, features = eps_digits
    tuner = Tuner(_cfg(teacher, features, tmp_path / "t"))
    tuner.setup()
    kept, _ = keep_trial_weights("distill_pd")
    seen = []
    assert tuner.short_run(tmp_path / "t" / "trial", 2, "1,1", "cpu", lambda s, m: seen.append((s, m))) == 4
    distill_pd(teacher, str(tmp_path / "plain"), branches=2, start_steps=8, end_steps=2, round_iters=2, batch=8,
               lr=1e-3, seed=0, device="cpu", progress=False, grid_seeds=1)
    plain = load_model(tmp_path / "plain" / "model.safetensors")
    ours = load_model(kept)
    assert ours.config["vp"] == plain.config["vp"] == dict(parameterization="v", time="cosine", converted_from="eps")
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), plain.state_dict().values()))
    # report points 0.5 and 1.0 of 2 rounds x 2 iterations: the end of round 1 (4 steps), the end of round 2 (2 steps)
    assert [s for s, _ in seen] == [2, 4] and not (tmp_path / "t" / "trial" / "model.safetensors").exists()
    rec = model_recipe(plain)
    assert rec.nfe == 2 and rec.clip_denoised and tuner.host.tune_recipe(tuner.cfg, 2).nfe == 4
    got = torch.cat([im for _, im, _ in generate(plain, tuner.seeds, rec)])
    assert seen[-1][1]["rmse"] == pytest.approx(image_agreement([(got, tuner.refs)])["rmse"], rel=1e-6)
    ref = torch.cat([im for _, im, _ in generate(load_model(teacher), tuner.seeds, tuner.host.ddim(8))])
    assert torch.equal(tuner.refs, ref)  # the teacher's 8-step DDIM from the tuning seeds


def test_cli_tune_pd_writes_a_study_a_final_check_and_a_report(eps_digits, tmp_path):
    from typer.testing import CliRunner
    from bdense.cli import app
    teacher, features = eps_digits
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["tune", "--method", "pd", "--teacher", teacher, "--out", str(out), "--trials", "2",
                                   "--trial-round-iters", "2", "--final-seeds", "1", "--eval-seeds", "16",
                                   "--eval-points", "1.0", "--features", features, *PD])
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="bdense-tune", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 2 and study.trials[0].user_attrs["spec"] == "1,1"
    setup = study.user_attrs["setup"]
    assert setup["method"] == "pd" and setup["trial_round_iters"] == 2 and setup["student_param"] == "v"
    assert [t.user_attrs["iterations"] for t in study.trials] == [4, 4]
    doc = json.loads((out / "tune.json").read_text())
    cost = doc["search"]["cost"]
    assert cost["student_train_passes"] == 3 * 4 * 8  # baseline and 2 trials, 4 iterations of batch 8
    assert cost["teacher_passes"] == 2 * 3 * 4 * 8 + 16 * 8 and cost["student_eval_passes"] == 3 * 16 * (4 + 2)
    final = json.loads((out / "final" / "results.json").read_text())
    assert final["host"]["method"] == "pd" and list(final["steps"]) == ["4", "2"]
    assert {"baseline", "uniform", "scheduled"} <= set(final["steps"]["2"]["runs"])
    text = (out / "tune_report.md").read_text()
    assert "PD 8 -> 2 steps, K = 2" in text and "scored at 2 steps" in text and "Final check" in text
    assert "50% of the final budget" in text and "bdense compare --method pd" in text


def test_tune_pd_refusals(eps_digits, tmp_path):
    teacher, features = eps_digits
    for bad, match in [(dict(branches=4), "K = 2"), (dict(final_nfes=(2,)), "--final-nfe"),
                       (dict(trial_round_iters=5), "exceeds --round-iters"), (dict(end_steps=6), "powers of two")]:
        with pytest.raises(BdenseError, match=match):
            _cfg(teacher, features, tmp_path / "x", **bad)
    with pytest.raises(BdenseError, match="VP teacher"):
        Tuner(_cfg(tmp_path_teacher_edm(tmp_path), features, tmp_path / "y"))


def tmp_path_teacher_edm(tmp_path):
    from bdense.models.checkpoint import save_model
    return str(save_model(tmp_path / "edm.safetensors", new_model("edm", 1, 8, preset="tiny", data="digits")))
