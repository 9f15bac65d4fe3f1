"""The confirmation's tooling (docs/confirmation.md): benchmarks/confirm.sh parses and every compare command of the
stages it is given passes bdense's own --dry-run; the cross-folder Holm verdict and the PD budget criterion."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_confirm_script_dry_run_checks_its_compare_commands(tmp_path):
    bd = Path(sys.executable).parent / "bdense"
    env = dict(os.environ, R=str(tmp_path / "confirm"), BD=str(bd), PY=sys.executable, OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", KEPT=str(tmp_path / "none"))  # not the committed teachers: the plan trains them
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "confirm.sh"), "--dry-run", "teachers", "sfd-digits-a",
                        "pd-confirm"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "ESTIMATE" in (ROOT / "benchmarks" / "confirm.sh").read_text()  # its CPU time, said to be an estimate
    assert log.count("train-teacher") == 3 and "--seed 101" in log and "--seed 102" in log  # printed, not run
    assert "points: NFE 2,3,4,5" in log and "settings: baseline (K=1), bdense (K=4)" in log and "runs: 40" in log
    assert "seed block 1: training seeds 1000-1004" in log and "one pool per seed, fresh" in log
    assert "seed block 3: training seeds 3000-3004" in log and "settings: baseline (K=1), bdense (K=2)" in log
    assert not (tmp_path / "confirm").exists()  # nothing trained, nothing written
    kept = tmp_path / "kept"  # a committed teacher is copied, not trained again (a cell may span machines)
    kept.mkdir()
    (kept / "digits-s101.safetensors").write_bytes(b"x")
    log = subprocess.run(["bash", str(ROOT / "benchmarks" / "confirm.sh"), "--dry-run", "teachers"],
                         env=dict(env, KEPT=str(kept)), capture_output=True, text=True, timeout=60, cwd=tmp_path).stdout
    assert f"+ cp {kept}/digits-s101.safetensors {tmp_path}/confirm/teachers/digits-s101/model.safetensors" in log
    assert log.count("train-teacher") == 2 and "--data digits --seed 101" not in log
    for arg in ("nonsense", "sfd-28@4"):  # sfd-28 has no NFE 4
        bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "confirm.sh"), "--dry-run", arg], env=env,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and f"unknown argument '{arg}'" in bad.stderr


def test_confirm_script_shards_a_cell_by_nfe_and_the_verdict_merges_the_shards(tmp_path):
    """sfd-28@3 is the cell's NFE 3 alone in its own folder (two shards run on two cores); the verdict stage copies
    the finished shards' parts into the cell's folder and reports it, and waits while a shard is unfinished."""
    bd, r, res = Path(sys.executable).parent / "bdense", tmp_path / "confirm", tmp_path / "committed"
    env = dict(os.environ, R=str(r), BD=str(bd), PY=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               RES=str(res))
    script = ["bash", str(ROOT / "benchmarks" / "confirm.sh"), "--dry-run"]
    log = subprocess.run(script + ["sfd-28@3", "sfd-mnist16@2:3,4"], env=env, capture_output=True, text=True,
                         timeout=300).stdout
    assert f"--out {r}/sfd-28-cpu-nfe3 --nfe 3 " in log and "points: NFE 3\n" in log and "runs: 6" in log
    assert f"--out {r}/sfd-mnist16-nfe2-seeds3+4 --nfe 2 " in log and "--only-seeds 3,4" in log  # two seeds of 5
    assert "training seeds 1003-1004" in log and "from noise seed 10000000057600" in log and "runs: 4" in log
    assert not r.exists()
    for n in (2, 3):  # two shards, the second unfinished
        (r / f"sfd-28-cpu-nfe{n}/parts").mkdir(parents=True)
        (r / f"sfd-28-cpu-nfe{n}/parts/results-{n}.json").write_text("{}")
        (r / f"sfd-28-cpu-nfe{n}/ref-stats.npz").write_text("")
    (r / "sfd-28-cpu-nfe2/results.json").write_text("{}")
    log = subprocess.run(script + ["verdict"], env=env, capture_output=True, text=True, timeout=300).stdout
    assert f"missing: {r}/sfd-28-cpu-nfe3 (a shard that has not finished)" in log and "report-only" not in log
    (r / "sfd-28-cpu-nfe3/results.json").write_text("{}")
    log = subprocess.run(script + ["verdict"], env=env, capture_output=True, text=True, timeout=300).stdout
    for n in (2, 3):
        assert f"+ cp {r}/sfd-28-cpu-nfe{n}/parts/results-{n}.json {r}/sfd-28-cpu/parts/" in log
    assert log.count("ref-stats.npz") == 1 and f"+ cp {r}/sfd-28-cpu-nfe2/ref-stats.npz {r}/sfd-28-cpu/" in log
    assert f"compare --report-only --out {r}/sfd-28-cpu" in log and f"sfd-28-cpu={r}/sfd-28-cpu" in log
    # the committed copies of a cell's results (its shards may have finished on other machines) are what is judged
    (res / "sfd-28-cpu/parts").mkdir(parents=True)
    log = subprocess.run(script + ["verdict"], env=env, capture_output=True, text=True, timeout=300).stdout
    assert f"sfd-28-cpu={res}/sfd-28-cpu" in log and f"compare --report-only --out {r}/sfd-28-cpu" in log
    shutil.rmtree(r)
    log = subprocess.run(script + ["verdict"], env=env, capture_output=True, text=True, timeout=300).stdout
    assert f"sfd-28-cpu={res}/sfd-28-cpu" in log and "report-only" not in log  # runs/ lost: the numbers remain


def results(cells: dict) -> dict:
    """A results.json of one folder: {nfe: (baseline values, setting values)} keyed by training seed."""
    runs = lambda vals: {k: {"dir": "", "evals": {2: {"fid": v, "rmse": v / 10}}} for k, v in enumerate(vals)}  # noqa: E731
    return {"config": {"seeds": 3}, "host": {"metrics": {"fid": "FID", "rmse": "RMSE"}, "grid_key": "nfe"},
            "settings": [{"name": "baseline", "branches": 1}, {"name": "bdense", "branches": 4}],
            "nfe": {str(n): {"teacher": {}, "steps_total": 2, "runs": {"baseline": runs(b), "bdense": runs(s)}}
                    for n, (b, s) in cells.items()}}


def test_holm_runs_over_every_folder_and_the_decision_rule():
    cv = bench("confirm_verdict")
    base = [5.0, 7.0, 9.0]
    one = results({2: (base, [4.0, 6.0, 8.0]), 3: (base, base)})  # NFE 2: 1 lower on each seed; NFE 3: equal
    rows = cv.verdicts({"A": one, "B": results({2: (base, [4.0, 5.7, 8.3])})})
    assert len(rows) == 6  # 3 cells x 2 metrics, one family
    fw = {(r["cell"], r["point"], r["metric"]): r["fw"] for r in rows}
    assert fw[("A", "NFE 2", "FID")] == "better" and fw[("A", "NFE 3", "FID")] == "not distinguishable"
    b = next(r for r in rows if r["cell"] == "B" and r["metric"] == "FID")
    assert b["p"] < 0.05 < b["p_holm"]  # better alone, not in the family of 6
    assert cv.decision(rows).startswith("NOT CONFIRMED: never worse, but better on a metric in only 1 of 3")
    rows = cv.verdicts({"A": results({2: (base, [4.0, 6.0, 8.0]), 3: (base, [6.0, 8.0, 10.0])})})
    assert cv.decision(rows) == "FAILS in 1 cell(s): A NFE 3 (family-wise worse on a metric)"
    rows = cv.verdicts({"A": results({2: (base, [4.0, 6.0, 8.0]), 3: (base, [4.0, 6.0, 8.0])})})
    assert cv.decision(rows).startswith("CONFIRMED")


def test_an_incomplete_family_is_read_against_the_whole_family(tmp_path, capsys):
    """With 4 of 26 comparisons in, only what Holm over 26 cannot change is called, whatever the 22 others show."""
    cv = bench("confirm_verdict")
    base = [5.0, 7.0, 9.0]
    r = results({2: (base, [4.0, 6.0, 8.0]), 3: (base, [4.0, 5.9, 8.1])})  # NFE 2: p = 0; NFE 3: p ~ 0.003
    rows = cv.verdicts({"28": r})
    assert cv.interim(rows, 26).startswith("INTERIM (4 of 26 comparisons in): not decided; settled better on a "
                                           "metric in 1 cell-point(s), settled worse in none, 2 comparison(s) open")
    fw = {(x["point"], x["metric"]): (x["settled"], x["fw"]) for x in rows}
    assert fw[("NFE 3", "FID")] == ("open", "better")  # Holm over the 4 present alone would call it better
    # 3 of the family's 4 cell-points settled better: the majority is final, only a missing 'worse' can still fail it
    rows = cv.verdicts({"28": results({n: (base, [4.0, 6.0, 8.0]) for n in (2, 3, 4)})})
    assert cv.interim(rows, 8) == ("INTERIM (6 of 8 comparisons in): settled better on a metric in 3 of 4 cell-points "
                                   "(the rule's majority), settled worse in none, 0 comparison(s) open: CONFIRMED "
                                   "unless one of the 2 missing comparisons or the 0 open one(s) leaning worse settles "
                                   "worse")
    assert cv.interim(rows[:2], 8).startswith("INTERIM (2 of 8 comparisons in): not decided")  # 1 of 4: no majority
    # an open comparison that leans worse (B-DENSE higher on every seed, p ~ 0.013) can still fail it; one leaning
    # better cannot, so only the former is named beside the missing ones
    rows = cv.verdicts({"28": results({2: (base, [4.0, 6.0, 8.0]), 3: (base, [4.0, 6.0, 8.0]),
                                       4: (base, [4.0, 6.0, 8.0]), 5: (base, [6.0, 7.8, 10.2])})})
    assert cv.interim(rows, 10).endswith("2 comparison(s) open: CONFIRMED unless one of the 2 missing comparisons or "
                                         "the 2 open one(s) leaning worse settles worse")
    assert {r["settled"] for r in rows if r["point"] == "NFE 5"} == {"open"}
    assert fw[("NFE 2", "FID")][0] == "better"
    worse = cv.verdicts({"28": results({2: (base, [6.0, 8.0, 10.0])})})
    assert cv.interim(worse, 26).endswith("FAILS in 1 cell(s): 28 NFE 2 (family-wise worse whatever the rest shows)")
    (tmp_path / "c").mkdir()
    (tmp_path / "c/results.json").write_text(json.dumps(r))
    assert cv.main(["--expect", "26", f"28x28={tmp_path / 'c'}"]) == 0
    out = capsys.readouterr().out
    assert "| Holm p over 26, any rest | settled |" in out and "| 0 | better |" in out and "| 0.00" in out
    assert "family-wise |" not in out and "Decision: INTERIM (4 of 26" in out  # not the final table
    # a folder of committed parts alone (one per NFE shard, runs gone) is the same cell
    (tmp_path / "p/parts").mkdir(parents=True)
    for n in ("2", "3"):
        part = dict(r, nfe={n: r["nfe"][n]}, teacher_digest="t", protocol={"ref": f"shard{n}/ref-stats.npz"})
        (tmp_path / f"p/parts/results-{n}.json").write_text(json.dumps(part))
    assert cv.main(["--expect", "26", f"28x28={tmp_path / 'p'}"]) == 0
    assert capsys.readouterr().out == out
    assert cv.main(["--expect", "26", f"28x28={tmp_path / 'none'}"]) == 2
    assert "holds no compare results" in capsys.readouterr().err


def test_a_cell_whose_seed_shards_are_not_all_in_settles_nothing(tmp_path, capsys):
    """2 of 5 seeds in: p > 5% would read as 'not distinguishable whatever the rest shows'; it is 'incomplete'."""
    cv = bench("confirm_verdict")
    base = [5.0, 7.0, 9.0]
    whole = results({2: (base, [4.0, 6.0, 8.0])})
    shard = dict(results({2: ([5.0, 7.0], [4.0, 7.5])}), config={"seeds": 5})  # p ~ 0.8 on 2 pairs
    rows = cv.verdicts({"A": whole, "B": shard})
    assert cv.interim(rows, 26).startswith("INTERIM (2 of 26 comparisons in; 2 more incomplete, their seed shards "
                                           "not all in): not decided; settled better on a metric in 1 cell-point(s)")
    assert {r["settled"] for r in rows if r["cell"] == "B"} == {"incomplete (2 of 5 seeds)"}
    assert {r["settled"] for r in rows if r["cell"] == "A"} == {"better"}
    # the last shard in: 5 of 5 seeds, read as any other comparison
    done = dict(results({2: (base + [6.0, 8.0], [4.0, 6.0, 8.0, 5.0, 7.0])}), config={"seeds": 5})
    rows = cv.verdicts({"B": done})
    assert cv.interim(rows, 26).startswith("INTERIM (2 of 26 comparisons in): ")
    assert {r["settled"] for r in rows} == {"better"}
    for name, res in (("a", whole), ("b", shard)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    assert cv.main(["--expect", "4", f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}"]) == 0
    out = capsys.readouterr().out
    assert "Interim: 2 of the 4" in out and "incomplete (2 of 5 seeds) |" in out and "family-wise |" not in out


def test_todo_names_the_seeds_without_a_finished_run_in_every_setting(tmp_path):
    """What the next sitting (a GPU window) of a sharded cell runs: the block's seeds lacking a committed result."""
    todo = bench("confirm_todo").todo
    cell = tmp_path / "cell"
    assert todo(cell, 2, 5, 1) == [0, 1, 2, 3, 4]  # nothing committed yet
    (cell / "parts").mkdir(parents=True)
    r = results({2: ([5.0, 7.0], [4.0, 6.0])})  # seeds 0 and 1 of block 0, both settings
    (cell / "parts/results-a.json").write_text(json.dumps(dict(r, teacher_digest="t", protocol={})))
    assert todo(cell, 2, 5, 0) == [2, 3, 4] and todo(cell, 3, 5, 0) == [0, 1, 2, 3, 4]
    r = results({2: ([5.0, 7.0], [4.0])})  # a second shard: seeds 2, 3 of the baseline, 2 of B-DENSE
    r["nfe"]["2"]["runs"] = {s: {k + 2: v for k, v in runs.items()} for s, runs in r["nfe"]["2"]["runs"].items()}
    (cell / "parts/results-b.json").write_text(json.dumps(dict(r, teacher_digest="t", protocol={})))
    assert todo(cell, 2, 5, 0) == [3, 4]
    assert todo(cell, 2, 5, 1) == [0, 1, 2, 3, 4]  # block 1's seeds are 1000-1004: none of these


@pytest.mark.parametrize("k1, met", [((8.0, 0.05), True), ((8.0, 0.07), False)])
def test_pd_budget_criterion_needs_both_metrics_at_the_last_two_rounds(k1, met):
    fid, rmse = k1
    def entry(steps, teacher_fid, teacher_rmse):
        return {"teacher": {f"teacher DDIM {steps} steps": {"fid": teacher_fid, "rmse": teacher_rmse}},
                "steps_total": 10, "runs": {"baseline": {2000 + i: {"dir": "", "evals": {10: {
                    "fid": fid + i, "rmse": rmse}}} for i in range(2)}}}
    r = {"settings": [{"name": "baseline", "branches": 1}], "host": {"grid_key": "steps"},
         "steps": {"32": entry(32, 1.0, 0.01), "16": entry(16, 9.0, 0.06), "8": entry(8, 10.0, 0.06)}}
    rows = bench("pd_budget").budget_rows(r)
    assert [(x["steps"], x["metric"]) for x in rows] == [(16, "fid"), (16, "rmse"), (8, "fid"), (8, "rmse")]
    assert all(x["beats"] for x in rows) == met  # the 32-step round (lost) is not one of the last two


def test_convergence_compares_the_baseline_at_75_and_100_percent():
    cv = bench("confirm_verdict")
    runs = lambda at75, at100: {k: {"dir": "", "evals": {2: {"rmse": 9.0}, 6: {"rmse": at75}, 8: {"rmse": at100}}}  # noqa: E731
                                for k in range(3)}
    r = {"config": {"seeds": 3}, "host": {"metrics": {"rmse": "RMSE"}, "grid_key": "nfe"},
         "settings": [{"name": "baseline", "branches": 1}, {"name": "bdense", "branches": 4}],
         "nfe": {"2": {"steps_total": 8, "runs": {"baseline": runs(0.100, 0.099)}},
                 "3": {"steps_total": 8, "runs": {"baseline": runs(0.100, 0.095)}}}}
    rows = {c["point"]: c for c in cv.convergence({"A": r})}
    assert rows["NFE 2"]["from"] == 0.75 and rows["NFE 2"]["change"] == pytest.approx(-0.01)
    assert rows["NFE 2"]["converged"] and not rows["NFE 3"]["converged"]  # -1% is converged, -5% is not
    assert rows["NFE 2"]["seeds_in"] == rows["NFE 2"]["asked"] == 3
    r["config"]["seeds"] = 5  # 3 of 5 seeds in: said beside the reading, which 3 seeds cannot settle
    assert {c["seeds_in"]: c["asked"] for c in cv.convergence({"A": r})} == {3: 5}


def test_publish_report_commits_the_chosen_figures_and_names_the_others(tmp_path):
    pub = bench("publish_report")
    run, docs = tmp_path / "run", tmp_path / "docs"
    run.mkdir()
    docs.mkdir()
    (run / "report.md").write_text("# r\n\n![fid_vs_nfe.png](fid_vs_nfe.png)\n![samples_nfe2.png](samples_nfe2.png)\n")
    (run / "fid_vs_nfe.png").write_bytes(b"png")
    (run / "samples_nfe2.png").write_bytes(b"png2")
    assert pub.publish(run, docs / "r.md", "c-", {"fid_vs_nfe.png"}) == ["c-fid_vs_nfe.png"]
    assert (docs / "r.md").read_text() == ("# r\n\n![fid_vs_nfe.png](c-fid_vs_nfe.png)\n"
                                           "(figure `samples_nfe2.png`: in the run folder, not committed)\n")
    assert (docs / "c-fid_vs_nfe.png").read_bytes() == b"png" and not (docs / "c-samples_nfe2.png").exists()
    with pytest.raises(SystemExit, match="has no figure nope.png; choose among fid_vs_nfe.png, samples_nfe2.png"):
        pub.publish(run, docs / "r.md", "c-", {"nope.png"})
    pub.publish(run, docs / "n.md", "c-", set(), note="Holm here is over this report only.")
    assert (docs / "n.md").read_text().startswith("# r\n\n> Holm here is over this report only.\n\n(figure `fid")


def test_branch_competition_pairs_the_endpoint_loss_with_the_baseline_on_each_seed(tmp_path, capsys):
    """Endpoint / baseline per interval over the last 20% of each run's logged losses, paired on training seeds;
    the early (higher) losses are left out; inner / endpoint is the intermediate branches' mean over the endpoint's."""
    bc = bench("branch_competition")
    r = results({2: ([0.0] * 3, [0.0] * 3)})
    for setting, runs in r["nfe"]["2"]["runs"].items():
        for seed, run in runs.items():
            run["dir"] = str(tmp_path / "runs" / setting / str(seed))
            Path(run["dir"]).mkdir(parents=True)
            scale, ratio = 1 + seed, 1.2 + 0.05 * seed  # seed 0, 1, 2: endpoint 1.2, 1.25, 1.3 x the baseline
            lines = []
            for step in range(10):
                early = 50.0 if step < 8 else 1.0
                if setting == "baseline":
                    row = {"loss/i1/b1": early * scale, "loss/i2/b1": early * 2 * scale}
                else:
                    row = {f"loss/i1/b{b}": early * scale * ratio * (1.0 if b == 4 else 2.0) for b in range(1, 5)}
                    row.update({f"loss/i2/b{b}": early * 2 * scale * (1.0 if b == 4 else 0.5) for b in range(1, 5)})
                lines.append(json.dumps(dict(row, step=step)))
            (Path(run["dir"]) / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows = {x["interval"]: x for x in bc.competition(r)}
    assert rows[1]["endpoint_ratio"]["mean"] == pytest.approx(1.25)
    assert rows[1]["endpoint_ratio"]["half"] == pytest.approx(4.303 * 0.05 / 3 ** 0.5, rel=1e-3)
    assert rows[1]["inner_ratio"] == pytest.approx(2.0) and rows[1]["seeds"] == 3
    assert rows[2]["endpoint_ratio"]["mean"] == pytest.approx(1.0) and rows[2]["inner_ratio"] == pytest.approx(0.5)
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell/results.json").write_text(json.dumps(r))
    assert bc.main([f"A={tmp_path / 'cell'}"]) == 0
    assert "| A | NFE 2 | bdense | 1 | 1.250 ± 0.124 | 2.00 | 3 |" in capsys.readouterr().out
    for runs in r["nfe"]["2"]["runs"].values():  # the run directories gone: said, not an empty table
        for run in runs.values():
            run["dir"] = str(tmp_path / "gone")
    (tmp_path / "cell/results.json").write_text(json.dumps(r))
    assert bc.main([f"A={tmp_path / 'cell'}"]) == 2
    assert "no run with logged branch losses on this machine" in capsys.readouterr().err
    assert bc.main([str(tmp_path / "cell")]) == 2 and "write LABEL=DIR" in capsys.readouterr().err

