"""bdense compare: the grid of runs, reuse of finished runs, refusal of stale ones, and the paired verdicts."""
import json
import sys
from pathlib import Path

import pytest

from bdense.errors import BdenseError
from bdense.studies.branches import competition
from bdense.studies.compare import CompareConfig, Setting, compare
from bdense.metrics.stats import paired_verdict, t_interval

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import run_cli  # noqa: E402


def tiny_compare(assets, out, **kw):
    teacher, features = assets
    base = dict(nfes=(2,), settings=(Setting("baseline", 1), Setting("bdense", 2, "end:0.5")), seeds=2,
                trajectories=64, batch=32, eval_seeds=16, eval_points=(0.5, 1.0), features=features, progress=False)
    return CompareConfig(teacher, str(out), **dict(base, **kw))


def test_compare_grid_report_and_reuse(digits_assets, tmp_path):
    r = compare(tiny_compare(digits_assets, tmp_path))
    runs = r["nfe"]["2"]["runs"]
    assert set(runs) == {"baseline", "bdense"} and all(set(v) == {0, 1} for v in runs.values())
    for per_seed in runs.values():
        for run in per_seed.values():
            assert set(run["evals"]) == {1, 2}  # 50% and 100% of 2 iterations
            assert all(m in run["evals"][2] for m in ("rmse", "psnr", "fid"))
    opts = json.loads((tmp_path / "runs/nfe2/bdense/seed1/options.json").read_text())
    assert opts["branches"] == 2 and opts["branch_weights"]["spec"] == "end:0.5" and opts["seed"] == 1
    text = (tmp_path / "report.md").read_text()
    assert "bdense (K=2)" in text and "verdict vs baseline" in text and "teacher reference" in text
    assert "baseline (K=1, weights none (endpoint only))" in text and "bdense (K=2, weights end:0.5)" in text
    model = tmp_path / "runs/nfe2/baseline/seed0/model.safetensors"
    stamp = model.stat().st_mtime_ns
    again = compare(tiny_compare(digits_assets, tmp_path))  # finished runs are reused, not retrained
    assert model.stat().st_mtime_ns == stamp
    assert again["nfe"]["2"]["runs"] == json.loads(json.dumps(runs), object_hook=lambda d: {
        (int(k) if k.isdigit() else k): v for k, v in d.items()})


def test_compare_refuses_a_finished_run_made_with_other_options(digits_assets, tmp_path):
    compare(tiny_compare(digits_assets, tmp_path, settings=(Setting("baseline", 1),), seeds=1))
    with pytest.raises(BdenseError, match=r"other options \(lr\)"):
        compare(tiny_compare(digits_assets, tmp_path, settings=(Setting("baseline", 1),), seeds=1, lr=1e-3))
    with pytest.raises(BdenseError, match=r"other options \(batch, trajectories\)"):
        compare(tiny_compare(digits_assets, tmp_path, settings=(Setting("baseline", 1),), seeds=1,
                             trajectories=96, batch=48))


def test_paired_verdicts_and_intervals():
    s = lambda *v: dict(enumerate(v))  # noqa: E731 (values keyed by training seed)
    assert paired_verdict(s(1.0, 2.0, 3.0), s(0.0, 1.0, 2.0))["verdict"] == "better"  # exactly 1 lower each seed
    assert paired_verdict(s(1.0, 2.0, 3.0), s(2.0, 3.0, 4.0))["verdict"] == "worse"
    assert paired_verdict(s(1.0, 2.0, 3.0), s(2.0, 1.0, 3.0))["verdict"].startswith("not distinguishable")
    assert paired_verdict(s(1.0), s(0.0))["verdict"] == "too few seeds to judge"
    ci = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert ci["mean"] == 2.0 and ci["half"] == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)


def test_compare_fresh_pools_target_modes_heads_and_branch_loss_plots(digits_assets, tmp_path):
    cfg = tiny_compare(digits_assets, tmp_path, pool="fresh", seeds=2,
                       settings=(Setting("baseline", 1), Setting.parse("anch:2:ramp:targets=anchored:heads=block")))
    r = compare(cfg)
    for seed, first in ((0, 0), (1, 64)):  # seed s trains on noise seeds s*64 .. s*64+63
        opts = json.loads((tmp_path / f"runs/nfe2/anch/seed{seed}/options.json").read_text())
        assert opts["first_trajectory_seed"] == first and opts["branch_targets"] == "anchored"
        assert opts["branch_heads"] == "block"
    assert (tmp_path / "cache/nfe2/manifest.json").exists() and (tmp_path / "cache/nfe2-from64/manifest.json").exists()
    assert r["config"]["pool"] == "fresh"
    text = (tmp_path / "report.md").read_text()
    assert "branch_losses_nfe2.png" in text and (tmp_path / "branch_losses_nfe2.png").stat().st_size > 1000
    assert "targets anchored, branch heads block" in text and "its own pool" in text
    # the endpoint against the baseline per interval, paired on the 2 seeds, as read back from the runs' logs
    assert "| point | setting | interval | endpoint / baseline | inner / endpoint | seeds |" in text
    rows = competition(r)
    assert {x["interval"] for x in rows} >= {1} and all(x["seeds"] == 2 and x["setting"] == "anch" for x in rows)
    for x in rows:
        ratios = []
        for seed in (0, 1):  # independently: the last 20% of each run's logged losses
            def tail(setting, b):
                vals = [json.loads(line)[f"loss/i{x['interval']}/b{b}"] for line in
                        (tmp_path / f"runs/nfe2/{setting}/seed{seed}/metrics.jsonl").read_text().splitlines()
                        if f"loss/i{x['interval']}/b{b}" in line]
                n = max(1, round(len(vals) * 0.2))
                return sum(vals[-n:]) / n
            ratios.append(tail("anch", 2) / tail("baseline", 1))
        assert x["endpoint_ratio"]["mean"] == pytest.approx(sum(ratios) / 2)
        assert f"| NFE 2 | anch | {x['interval']} | {x['endpoint_ratio']['mean']:.3f} ± " in text


def test_compare_reports_an_sfdv_setting_at_each_nfe_against_the_per_nfe_baselines(digits_assets, tmp_path):
    """One SFD-v run per seed serves every NFE (sampled with that count), trained on the per-NFE budget at each
    count from the same per-NFE caches; its progress is in per-NFE units, so it lines up with the baseline's."""
    from bdense.studies.compare import parse_setting
    from bdense.studies.sfdv import SFDvSetting
    v = parse_setting("v:2:2-3:heads=block")  # each intermediate branch with its own last stage, too
    assert isinstance(v, SFDvSetting) and v.counts == (2, 3) and v.heads == "block"
    assert isinstance(parse_setting("b:2:end:0.5"), Setting)
    with pytest.raises(BdenseError, match="heads must be shared or block"):
        parse_setting("v:2:2-3:heads=wide")
    cfg = dict(nfes=(2, 3), settings=(Setting("baseline", 1), v), seeds=1)
    r = compare(tiny_compare(digits_assets, tmp_path, **cfg))
    d2, d3 = (r["nfe"][n]["runs"]["v"][0] for n in ("2", "3"))
    assert d2["dir"] == d3["dir"] and d2["dir"].endswith("runs/sfdv/v/seed0")
    opts = json.loads((tmp_path / "runs/sfdv/v/seed0/options.json").read_text())
    assert opts["nfe"] == [2, 3] and opts["trajectories"] == 2 * 64 and opts["branches"] == 2
    assert opts["branch_heads"] == "block"
    base = r["nfe"]["2"]["runs"]["baseline"][0]["evals"]
    assert set(d2["evals"]) == set(d3["evals"]) == set(base) == {1, 2}
    assert d2["evals"][2]["rmse"] != d3["evals"][2]["rmse"]  # sampled at its count 2 and at its count 3
    from bdense.distill.sfd.targets import DEFAULT_WEIGHTS
    text = (tmp_path / "report.md").read_text()
    assert "v (K=2)" in text  # the default is spelled out: it may change between versions
    assert f"v (K=2, weights default ({DEFAULT_WEIGHTS}), branch heads block)" in text
    model = tmp_path / "runs/sfdv/v/seed0/model.safetensors"
    stamp = model.stat().st_mtime_ns
    compare(tiny_compare(digits_assets, tmp_path, **cfg))  # reused, not retrained
    assert model.stat().st_mtime_ns == stamp
    for bad in ((v, Setting("baseline", 1)),):  # the baseline must be a per-NFE K = 1 setting
        with pytest.raises(BdenseError, match="first --setting"):
            tiny_compare(digits_assets, tmp_path / "x", settings=bad)
    with pytest.raises(BdenseError, match="not \\[4\\]"):
        tiny_compare(digits_assets, tmp_path / "y", nfes=(2, 4), settings=(Setting("baseline", 1), v))


def test_runs_made_before_branch_heads_stay_reusable(tmp_path, tiny_teacher_file):
    """An options.json written before --branch-heads existed (no key) is a shared-heads run: compare reuses it
    for the default setting and refuses it for heads=block."""
    from bdense.distill.sfd.run import distill_sfd
    from bdense.hosts.common import check_reusable
    kw = dict(nfe=2, trajectories=64, batch=32, seed=0)
    s = Setting.parse("h:4:ramp:heads=block")
    assert s.heads == "block" and s.distill_options()["branch_heads"] == "block"
    assert "branch_heads" not in Setting.parse("b:4:ramp").distill_options()
    with pytest.raises(BdenseError, match="heads must be shared or block"):
        Setting.parse("h:4:heads=wide")
    old = distill_sfd(str(tiny_teacher_file), str(tmp_path), dry_run=True, branches=4, **kw)["options"]
    assert old.pop("branch_heads") == "shared"
    (tmp_path / "options.json").write_text(json.dumps(old))
    for opts in ({"branches": 4}, {"branches": 4, "branch_heads": "shared"}, Setting.parse("b:4").distill_options()):
        check_reusable(tmp_path, distill_sfd(str(tiny_teacher_file), str(tmp_path), dry_run=True,
                                             **dict(kw, **opts))["options"])
    with pytest.raises(BdenseError, match=r"other options \(branch_heads\)"):
        check_reusable(tmp_path, distill_sfd(str(tiny_teacher_file), str(tmp_path), dry_run=True, branches=4,
                                             branch_heads="block", **kw)["options"])


def test_seed_block_moves_every_seed_of_the_study_and_is_recorded(digits_assets, tmp_path):
    from bdense.seeds import SeedBlock
    from bdense.studies.compare import EVAL_SEED_BASE
    assert SeedBlock(0).run_seeds(3) == [0, 1, 2] and SeedBlock(0).eval_seeds(2) == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    assert SeedBlock(0).first_trajectory(2, 64, True) == 128 and SeedBlock(0).first_trajectory(2, 64, False) == 0
    cfg = tiny_compare(digits_assets, tmp_path, seed_block=1, pool="fresh", settings=(Setting("baseline", 1),))
    assert "training seeds 1000-1001, evaluation seeds 11000000000000-11000000000015" in cfg.describe_grid()
    r = compare(cfg)
    assert set(r["nfe"]["2"]["runs"]["baseline"]) == {1000, 1001} and r["config"]["seed_block"] == 1
    for seed, first in ((1000, 10**13), (1001, 10**13 + 64)):  # block 1's pools: above every block-0 seed
        opts = json.loads((tmp_path / f"runs/nfe2/baseline/seed{seed}/options.json").read_text())
        assert opts["first_trajectory_seed"] == first and opts["seed"] == seed
    assert r["protocol"]["eval_seeds"] == f"{10**13 + EVAL_SEED_BASE}-{10**13 + EVAL_SEED_BASE + 15}"
    assert "seed block 1: training seeds 1000, 1001" in (tmp_path / "report.md").read_text()
    with pytest.raises(BdenseError, match="seed block 1; use --seed-block 1"):
        compare(tiny_compare(digits_assets, tmp_path, settings=(Setting("baseline", 1),)))
    with pytest.raises(BdenseError, match="overlap the evaluation seeds"):
        tiny_compare(digits_assets, tmp_path, seed_block=2, pool="fresh", seeds=100, trajectories=2 * 10**10)
    # a start that stopped after recording its block (e.g. the data set was not fetched yet) is resumed, not refused
    from bdense.io import check_out_dir
    from bdense.studies.compare import Comparison
    stopped = tmp_path / "stopped"
    Comparison(tiny_compare(digits_assets, stopped, seed_block=1, pool="fresh"))
    assert [p.name for p in stopped.iterdir()] == ["seed-block.json"]
    check_out_dir("--out", stopped)  # raised "holds files bdense did not write" before


def test_report_only_merges_every_comparison_in_out_and_move_stale_keeps_old_runs(digits_assets, tmp_path):
    from bdense.studies.union import report_union
    base = (Setting("baseline", 1),)
    compare(tiny_compare(digits_assets, tmp_path, seeds=1, settings=base))
    compare(tiny_compare(digits_assets, tmp_path, seeds=1, nfes=(3,), settings=base + (Setting("bdense", 2, "end:0.5"),)))
    assert list(json.loads((tmp_path / "results.json").read_text())["nfe"]) == ["3"]  # the last invocation only
    report_union(tmp_path)
    r = json.loads((tmp_path / "results.json").read_text())
    assert list(r["nfe"]) == ["2", "3"] and set(r["nfe"]["2"]["runs"]) == {"baseline"}
    assert set(r["nfe"]["3"]["runs"]) == {"baseline", "bdense"} and r["config"]["nfes"] == [2, 3]
    text = (tmp_path / "report.md").read_text()
    assert "### NFE 2" in text and "### NFE 3" in text and "2 more had too few paired seeds" in text  # 1 seed
    part = next((tmp_path / "parts").glob("*.json"))
    other = json.loads(part.read_text())
    other["teacher_digest"] = "another teacher"
    (tmp_path / "parts" / "results-other.json").write_text(json.dumps(other))
    with pytest.raises(BdenseError, match="differ in teacher digest"):
        report_union(tmp_path)
    other["teacher_digest"] = json.loads(part.read_text())["teacher_digest"]
    other["protocol"]["ref"] = "another-shard-folder/ref-stats.npz"  # an NFE shard run in its own folder (confirm.sh)
    (tmp_path / "parts" / "results-other.json").write_text(json.dumps(other))
    report_union(tmp_path)  # the same statistics (ref_sha256) wherever their file lay: merged
    assert json.loads((tmp_path / "results.json").read_text())["protocol"]["ref"] == str(tmp_path / "ref-stats.npz")
    other["protocol"]["ref_sha256"] = "other statistics"
    (tmp_path / "parts" / "results-other.json").write_text(json.dumps(other))
    with pytest.raises(BdenseError, match="differ in protocol"):
        report_union(tmp_path)
    (tmp_path / "parts" / "results-other.json").unlink()
    code, out, err = run_cli(["compare", "--report-only", "--out", str(tmp_path)])  # the command itself
    assert code == 0 and "report.md" in out, err
    assert run_cli(["compare", "--report-only", "--out", str(tmp_path / "empty")])[2].startswith(
        "error: " + str(tmp_path / "empty") + " holds no compare results")
    assert "compare needs --teacher" in run_cli(["compare", "--out", str(tmp_path / "x")])[2]
    # a run made with other options is renamed aside (nothing deleted) and trained anew
    compare(tiny_compare(digits_assets, tmp_path, seeds=1, settings=base, lr=1e-3, move_stale=True))
    aside = list((tmp_path / "runs/nfe2/baseline").glob("seed0.stale-*"))
    assert len(aside) == 1 and (aside[0] / "model.safetensors").exists()
    assert json.loads((aside[0] / "options.json").read_text())["lr"] == 2e-4
    assert json.loads((tmp_path / "runs/nfe2/baseline/seed0/options.json").read_text())["lr"] == 1e-3
    # a trajectory cache made for another teacher grid is moved aside too, and made again
    compare(tiny_compare(digits_assets, tmp_path, seeds=1, settings=base, lr=1e-3, move_stale=True,
                         teacher_order_rule="dpm-solver"))
    assert len(list((tmp_path / "cache").glob("nfe2.stale-*"))) == 1
    assert json.loads((tmp_path / "cache/nfe2/manifest.json").read_text())["complete"]


def test_seed_shards_train_the_runs_of_the_whole_comparison_and_merge_into_it(digits_assets, tmp_path):
    """--only-seeds trains a subset of the --seeds training seeds: a shard's run is byte-identical to the same seed's
    run of the whole comparison (its fresh pool is drawn by seed, not by position in the invocation), and
    --report-only over the shards' parts is the whole comparison."""
    from bdense.studies.union import report_union
    base = (Setting("baseline", 1),)
    kw = dict(seeds=2, settings=base, seed_block=1, pool="fresh")
    whole = compare(tiny_compare(digits_assets, tmp_path / "whole", **kw))
    shard = tiny_compare(digits_assets, tmp_path / "shards", only_seeds=(1,), **kw)
    assert "training seeds 1001, evaluation" in shard.describe_grid() and "runs: 1" in shard.describe_grid()
    assert "training seeds 1000, 1002-1003, evaluation" in tiny_compare(
        digits_assets, tmp_path / "x", **dict(kw, seeds=4), only_seeds=(0, 2, 3)).describe_grid()
    r = compare(shard)
    assert set(r["nfe"]["2"]["runs"]["baseline"]) == {1001}
    run = "runs/nfe2/baseline/seed1001/model.safetensors"
    assert (tmp_path / "shards" / run).read_bytes() == (tmp_path / "whole" / run).read_bytes()
    compare(tiny_compare(digits_assets, tmp_path / "shards", only_seeds=(0,), **kw))
    merged = json.loads(report_union(tmp_path / "shards").parent.joinpath("results.json").read_text())
    want = whole["nfe"]["2"]["runs"]["baseline"]
    got = merged["nfe"]["2"]["runs"]["baseline"]
    assert {int(k): v["evals"] for k, v in got.items()} == {k: {str(s): m for s, m in v["evals"].items()}
                                                            for k, v in want.items()}
    assert merged["config"]["only_seeds"] is None and merged["config"]["seeds"] == 2
    with pytest.raises(BdenseError, match="--only-seeds 2: each must be a training seed index from 0 to 1"):
        tiny_compare(digits_assets, tmp_path / "bad", only_seeds=(2,), **kw)
    code, out, err = run_cli(["compare", "--teacher", digits_assets[0], "--out", str(tmp_path / "cli"), "--seeds", "5",
                              "--only-seeds", "3,4", "--dry-run"])
    assert code == 0 and "training seeds 3-4" in out, err


@pytest.mark.parametrize("seeds", [[0], [3, 4], [1000, 1002, 1003], [0, 1, 2, 5, 7, 8], [9, 2, 3]])
def test_format_seeds_round_trips_through_parse_seeds(seeds):
    from bdense.seeds import format_seeds, parse_seeds
    assert parse_seeds(format_seeds(seeds).replace(" ", "")) == sorted(seeds)
    assert format_seeds([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
