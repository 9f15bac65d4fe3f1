"""bdense tune: search space as weight specs, seed separation, best <= uniform, resumable study, pruning, final check."""
import json
import signal

import optuna
import pytest
import torch

from bdense.distill.weights import parse_weights
from bdense.errors import BdenseError, Interrupted
from bdense.studies import tune as tune_mod
from bdense.studies.compare import EVAL_SEED_BASE
from bdense.seeds import SeedBlock
from bdense.studies.tune import Tuner, suggest_spec, tune, uniform_params
from bdense.studies.tune_plan import TuneConfig, check_disjoint, parse_objective

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def assets(digits_assets):
    return digits_assets


def tiny_cfg(assets, out, **kw):
    teacher, features = assets
    base = dict(trial_trajectories=64, trajectories=64, batch=32, tune_seeds=16, eval_seeds=16, features=features,
                report_points=(0.5, 1.0), eval_points=(1.0,), final=False, final_seeds=2, progress=False)
    return TuneConfig(teacher, str(out), **dict(base, **kw))


@pytest.mark.parametrize("k", [2, 4])
def test_every_point_of_the_search_space_is_a_valid_spec(k):
    specs = []

    def objective(trial):
        spec = suggest_spec(trial, k)
        w = parse_weights(spec, k)
        assert w.spec == spec and len(w.at(0, 10)) == k and all(x >= 0 for x in w.at(10, 10))
        specs.append(spec)
        return 0.0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(uniform_params(k))
    study.optimize(objective, n_trials=150)
    assert specs[0] == ",".join(["1"] * k)
    assert {s.split(":")[0] for s in specs} >= {"end", "decay"} and any(":" not in s for s in specs[1:])
    assert any(s.endswith(":linear") for s in specs) and any("cosine" in s for s in specs)


def test_objective_parsing():
    assert parse_objective("rmse") == 1.0 and parse_objective("fid") == 0.0 and parse_objective("combo:0.3") == 0.3
    for bad in ("combo:2", "combo", "psnr", "combo:x"):
        with pytest.raises(BdenseError, match="objective"):
            parse_objective(bad)


def test_tuning_seeds_are_disjoint_from_training_and_evaluation(assets, tmp_path):
    tuner = Tuner(tiny_cfg(assets, tmp_path, jobs=2, device="cpu"))
    assert not set(tuner.seeds) & set(tuner.cmp.eval_seeds)
    assert min(tuner.seeds) >= tuner.cfg.trajectories and tuner.cmp.eval_seeds[0] == EVAL_SEED_BASE
    assert tuner.jobs == 1 and "CUDA" in tuner.notes[0]  # CPU: one trial at a time, and it says so
    with pytest.raises(BdenseError, match="overlap"):
        check_disjoint(SeedBlock().tune_seeds(4), [SeedBlock().tune_seeds(4)[2]], 0, 64)
    with pytest.raises(BdenseError, match="overlap"):
        check_disjoint([5], [EVAL_SEED_BASE], 0, 64)
    with pytest.raises(BdenseError, match="overlap"):  # a pool that starts below the tuning seeds and reaches them
        check_disjoint([10, 11], [EVAL_SEED_BASE], 5, 6)
    check_disjoint([10, 11], [EVAL_SEED_BASE], 12, 64)  # a pool above them


def assert_best_is_the_argmin(doc, trials):
    """The summary's best and uniform rows are the study's own trials (best <= uniform then follows, and is no test)."""
    done = [t for t in trials if t.state.name == "COMPLETE"]
    best = min(done, key=lambda t: t.value)
    assert (doc["best"]["trial"], doc["best"]["value"], doc["best"]["spec"]) == (
        best.number, best.value, best.user_attrs["spec"])
    assert doc["uniform"]["value"] == trials[0].value and trials[0].state.name == "COMPLETE"
    assert [r["trial"] for r in doc["top"]] == [t.number for t in sorted(done, key=lambda t: t.value)[:5]]


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_search_is_resumable_and_best_is_the_argmin(assets, tmp_path, monkeypatch, stop):
    out, storage = tmp_path / "study", f"sqlite:///{tmp_path / 'study' / 'optuna.db'}"
    real = tune_mod.distill_sfd

    def stop_in_trial_1(teacher, d, **kw):
        """Ctrl-C: the trainer stops early and reports it not completed; SIGTERM: it raises Interrupted (a
        BaseException optuna does not catch), after writing its checkpoint."""
        if not d.endswith("00001"):
            return real(teacher, d, **kw)
        if stop == "sigterm":
            raise Interrupted(signal.SIGTERM, "checkpoint of step 1")
        return {"completed": False}
    monkeypatch.setattr(tune_mod, "distill_sfd", stop_in_trial_1)
    with pytest.raises(KeyboardInterrupt if stop == "ctrl-c" else Interrupted):
        tune(tiny_cfg(assets, out, trials=3))
    monkeypatch.setattr(tune_mod, "distill_sfd", real)
    study = lambda: optuna.load_study(study_name="bdense-tune", storage=storage)  # noqa: E731
    assert [t.state.name for t in study().trials] == ["COMPLETE", "FAIL"]
    study().ask()  # a trial left RUNNING by a killed process
    doc = tune(tiny_cfg(assets, out, trials=4))["search"]
    trials = study().trials
    assert doc["trials"] == {"complete": 4, "pruned": 0, "failed": 2} and len(trials) == 6
    assert trials[3].user_attrs["retry_of"] == 1 and trials[3].params == trials[1].params
    assert doc["uniform"]["trial"] == 0 and doc["uniform"]["spec"] == "1,1,1,1"
    assert_best_is_the_argmin(doc, trials)
    parse_weights(doc["best"]["spec"], 4)
    first = {t.number: (t.params, t.datetime_complete) for t in trials if t.state.name == "COMPLETE"}
    doc = tune(tiny_cfg(assets, out, trials=5))["search"]
    trials = study().trials
    assert len(trials) == 7 and doc["trials"]["complete"] == 5
    assert {t.number: (t.params, t.datetime_complete) for t in trials if t.number in first} == first  # not redone
    params = [json.dumps(t.params, sort_keys=True) for t in trials if t.state.name == "COMPLETE"]
    assert len(params) == len(set(params))  # the continued sampler does not replay the first run's start
    doc = tune(tiny_cfg(assets, out, trials=5))["search"]
    assert len(study().trials) == 7  # nothing left to do
    assert_best_is_the_argmin(doc, study().trials)
    assert doc["cost"]["teacher_passes"] == (64 + 16) * 12 and doc["cost"]["student_train_passes"] > 0
    with pytest.raises(BdenseError, match="another setup"):
        tune(tiny_cfg(assets, out, trials=5, objective="fid"))


class PruneAfterFirst(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number > 0


def test_pruning_and_final_check(assets, tmp_path, monkeypatch):
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **kw: PruneAfterFirst())
    cfg = tiny_cfg(assets, tmp_path, trials=3, objective="combo:0.5", final=True)
    r = tune(cfg)
    doc = r["search"]
    assert doc["trials"] == {"complete": 1, "pruned": 2, "failed": 0} and doc["best"]["spec"] == "1,1,1,1"
    study = optuna.load_study(study_name="bdense-tune", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.user_attrs["iterations"] for t in study.trials] == [2, 1, 1]  # pruned at the half-way report
    assert doc["best"]["value"] == pytest.approx(0.5 * doc["best"]["rmse"] / doc["baseline_trial_budget"]["rmse"]
                                                 + 0.5 * doc["best"]["fid"] / doc["baseline_trial_budget"]["fid"])
    runs = r["final"]["nfe"]["2"]["runs"]
    assert set(runs) == {"baseline", "uniform", "scheduled", "default"}  # the winner is uniform: no 'tuned' row
    lo, hi = (int(x) for x in r["final"]["protocol"]["eval_seeds"].split("-"))
    assert not set(range(lo, hi + 1)) & set(SeedBlock().tune_seeds(cfg.tune_seeds))
    assert (tmp_path / "tune_report.md").exists() and (tmp_path / "final" / "report.md").exists()
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["spec"] == "1,1,1,1" and set(saved["final"]["2"]) == set(runs)
    assert "Tuning cost" in (tmp_path / "tune_report.md").read_text()
    assert "of the final budget" not in (tmp_path / "tune_report.md").read_text()  # trials ran the full budget


def test_cli_tune_apply(assets, tmp_path):
    from typer.testing import CliRunner
    from bdense.cli import app
    teacher, features = assets
    res = CliRunner().invoke(app, ["tune", "--teacher", teacher, "--out", str(tmp_path), "--apply", "end:0.5",
                                   "--trajectories", "64", "--trial-trajectories", "64", "--batch", "32",
                                   "--final-seeds", "1", "--eval-seeds", "16", "--eval-points", "1.0",
                                   "--features", features])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "tune_report.md").read_text()
    assert "No search" in text and "tuned (K=4)" in text
    assert not (tmp_path / "optuna.db").exists()  # --apply runs no search


def test_cli_tune_dry_run_prints_the_seeds_a_study_would_use_and_makes_nothing(assets, tmp_path):
    from typer.testing import CliRunner
    from bdense.cli import app
    teacher, features = assets
    out, common = tmp_path / "study", ["tune", "--teacher", teacher, "--features", features, "--seed-block", "1",
                                       "--tune-seeds", "16", "--eval-seeds", "16", "--final-seeds", "2",
                                       "--trajectories", "64", "--batch", "32", "--final-nfe", "2,3", "--dry-run"]
    res = CliRunner().invoke(app, common + ["--out", str(out), "--trial-trajectories", "64"])
    assert res.exit_code == 0, res.output
    assert not out.exists()  # a plan: no cache, study or folder
    tuner = Tuner(tiny_cfg(assets, out, seed_block=1, final_seeds=2, final_nfes=(2, 3)))  # what a real study uses
    assert f"tuning seeds {tuner.seeds[0]}-{tuner.seeds[-1]}" in res.output
    assert f"evaluation seeds {tuner.cmp.eval_seeds[0]}-{tuner.cmp.eval_seeds[-1]}" in res.output
    assert "training seeds 1000-1001" in res.output and "points: NFE 2,3" in res.output
    assert "settings: baseline (K=1), uniform (K=4), tuned (K=4), scheduled (K=4), default (K=4)" in res.output
    assert "runs: 20" in res.output  # 5 settings x 2 seeds x 2 NFEs
    bad = CliRunner().invoke(app, common + ["--out", str(tmp_path / "bad"), "--trial-trajectories", "16"])
    assert "--trial-trajectories 16 is smaller than one --batch" in str(bad.exception)


def test_a_block_heads_trial_is_a_plain_distill_run_and_the_final_check_keeps_the_heads(assets, tmp_path, monkeypatch,
                                                                                      keep_trial_weights):
    """--branch-heads block reaches every trial (its student must hold the heads the run's snapshots carry, or
    loading them fails) and every K > 1 setting of the final check; a continued study must use the same heads."""
    from bdense.models.checkpoint import load_model
    teacher, _ = assets
    tuner = Tuner(tiny_cfg(assets, tmp_path / "t", branch_heads="block"))
    tuner.setup()
    kept, real = keep_trial_weights("distill_sfd")
    seen = []
    tuner.short_run(tmp_path / "t" / "trial", 4, "1,1,1,2", "cpu", lambda s, m: seen.append((s, m)))
    real(teacher, str(tmp_path / "plain"), nfe=2, branches=4, branch_weights="1,1,1,2", branch_heads="block",
         trajectories=64, batch=32, lr=2e-4, seed=0, device="cpu", progress=False, grid_seeds=1,
         trajectory_cache=str(tuner.host.tune_cache))
    plain, ours = load_model(tmp_path / "plain" / "model.safetensors"), load_model(kept)
    assert ours.branch_heads == plain.branch_heads == "block"
    assert ours.state_dict().keys() == plain.state_dict().keys()
    assert any("head" in k for k in plain.state_dict())  # the copies are in the run's model (export drops them)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in plain.state_dict().items())
    plain_m = tuner.measure(plain.eval(), "cpu", tuner.host.tune_recipe(tuner.cfg, 2))
    assert seen[-1][1] == plain_m  # the trial's student scored the run's own weights
    asked = []
    monkeypatch.setattr(tune_mod, "compare", lambda cfg: asked.append(cfg.settings) or {})
    tuner.final("1,1,1,2")
    assert [(s.name, s.heads) for s in asked[0]] == [("baseline", None), ("uniform", "block"), ("tuned", "block"),
                                                      ("scheduled", "block"), ("default", "block")]
    assert tuner.host.tune_setup(tuner.cfg, tuner.points)["branch_heads"] == "block"
    assert "branch_heads" not in tuner.host.tune_setup(tiny_cfg(assets, tmp_path / "s"), tuner.points)  # old studies
    with pytest.raises(BdenseError, match="--branch-heads is for --method sfd"):
        TuneConfig(teacher, str(tmp_path / "pd"), method="pd", branch_heads="block")
    with pytest.raises(BdenseError, match="shared or block"):
        tiny_cfg(assets, tmp_path / "bad", branch_heads="wide")
