"""SFD-v: the step-count embedding starts exact, one count is plain SFD bit for bit, the count sequence survives a
resume exactly, and a multi-NFE student samples, loads, exports and caches by count."""
import copy

import pytest
import torch
from safetensors import safe_open

from bdense.distill.sfd.plan import SFDPlan
from bdense.distill.sfd.run import distill_sfd
from bdense.distill.sfd.task import SFDTask
from bdense.distill.sfd.counts import iterations_per_count, nfe_schedule, parse_counts
from bdense.distill.sfd.sfdv import SFDvTask
from bdense.distill.weights import ConstantWeights
from bdense.errors import BdenseError
from bdense.models.branches import widen
from bdense.models.checkpoint import load_model, save_model
from bdense.models.factory import new_model
from bdense.models.nfe_embedding import bind_nfe, fold_nfe, with_nfe_embedding
from bdense.train.loop import TrainConfig, Trainer
from bdense.train.rundir import RunDir

KW = dict(trajectories=32, batch=4, lr=1e-3, progress=False, device="cpu", grid_seeds=4, teacher_solver="euler",
          teacher_substeps=2, branches=2, seed=1, checkpoint_every=3, log_every=1)


def _weights(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("param", ["edm", "v", "eps"])
def test_zero_initialised_embedding_changes_nothing(param):
    torch.manual_seed(0)
    teacher = new_model(param, 1, 8, preset="tiny").eval()
    student = widen(teacher, 2)
    sv = with_nfe_embedding(student, (2, 3, 4, 5)).eval()
    x, s = torch.randn(3, 1, 8, 8), torch.tensor([20.0, 1.0, 0.05])
    plain = student(x, s)
    for n in (2, 3, 4, 5):
        assert torch.equal(sv(x, s, nfe=n), plain)
    with torch.no_grad():  # once trained (here: any non-zero last layer), the counts give different outputs
        sv.nfe_embed.linear_2.weight.normal_()
    assert not torch.equal(sv(x, s, nfe=2), sv(x, s, nfe=3))
    with pytest.raises(BdenseError, match="trained for NFE 2-5 only, not --nfe 6"):
        sv(x, s, nfe=6)
    with pytest.raises(BdenseError, match="choose one with --nfe"):
        sv(x, s)


def _task_run(tmp_path, name, teacher, student, task_of, steps):
    task = task_of(student)
    tr = Trainer(task, RunDir(tmp_path / name, {}), TrainConfig(steps=steps, lr=1e-3, progress=False, device="cpu"))
    return [task.train_step(tr, it) for it in range(steps)], student


def test_one_count_is_plain_sfd_bit_for_bit(tmp_path, tiny_teacher):
    plan = SFDPlan(nfe=2, branches=2, substeps=2, teacher_solver="euler")
    w = ConstantWeights((0.5, 1.0))
    sched = nfe_schedule((2,), seed=3, steps=3)
    assert sched == [(2, 0), (2, 1), (2, 2)]
    plain_m, plain = _task_run(tmp_path, "a", tiny_teacher, widen(tiny_teacher, 2),
                               lambda st: SFDTask(tiny_teacher, st, plan, w, batch=4, seed=3, pool=12), 3)
    v_m, v = _task_run(tmp_path, "b", tiny_teacher, widen(tiny_teacher, 2),
                       lambda st: SFDvTask(tiny_teacher, st, {2: plan}, sched, w, batch=4, seed=3), 3)
    assert [{k: m[k] for k in p} for p, m in zip(plain_m, v_m)] == plain_m
    for (k, a), (_, b) in zip(plain.state_dict().items(), v.state_dict().items()):
        assert torch.equal(a, b), k


def test_embedding_changes_nothing_at_step_0(tmp_path, tiny_teacher):
    """NFE 1 with AFS trains one interval: one optimizer step per iteration. With the zero-initialised count
    embedding the first iteration's losses and every shared weight after its step equal plain SFD's exactly."""
    plan = SFDPlan(nfe=1, branches=2, substeps=2, teacher_solver="euler")
    w = ConstantWeights((1.0, 1.0))
    plain_m, plain = _task_run(tmp_path, "a", tiny_teacher, widen(tiny_teacher, 2),
                               lambda st: SFDTask(tiny_teacher, st, plan, w, batch=4, seed=0, pool=4), 1)
    student = with_nfe_embedding(widen(tiny_teacher, 2), (1, 2))
    v_m, v = _task_run(tmp_path, "b", tiny_teacher, student,
                       lambda st: SFDvTask(tiny_teacher, st, {1: plan}, [(1, 0)], w, batch=4, seed=0), 1)
    assert {k: v_m[0][k] for k in plain_m[0]} == plain_m[0]
    vs = v.state_dict()
    for k, a in plain.state_dict().items():
        assert torch.equal(a, vs[k]), k
    assert vs["nfe_embed.linear_2.weight"].abs().sum() > 0  # the embedding itself did learn


def test_count_schedules():
    assert parse_counts("2-5") == (2, 3, 4, 5) and parse_counts("5,2") == (2, 5) and parse_counts(3) == (3,)
    for bad in ("5-2", "3-3", "0-2", "2-9", "2,2", "a", "", "2-", "1.5"):
        with pytest.raises(BdenseError, match="--nfe"):
            parse_counts(bad)
    s = nfe_schedule((2, 3, 4, 5), seed=7, steps=10)
    assert [sorted(n for n, _ in s[b:b + 4]) for b in (0, 4)] == [[2, 3, 4, 5]] * 2  # each block holds every count
    assert s == nfe_schedule((2, 3, 4, 5), seed=7, steps=10) and s[:6] == nfe_schedule((2, 3, 4, 5), 7, 6)
    assert s != nfe_schedule((2, 3, 4, 5), seed=8, steps=10)
    for n in (2, 3, 4, 5):  # k counts the earlier draws of the same count: its batch in that count's pool
        ks = [k for m, k in s if m == n]
        assert ks == list(range(len(ks)))
    iid = nfe_schedule((2, 3, 4, 5), seed=0, steps=400, draw="iid")
    assert iid[:50] == nfe_schedule((2, 3, 4, 5), 0, 50, "iid") and 70 < min(iterations_per_count(iid).values())
    with pytest.raises(BdenseError, match="never draw NFE"):
        nfe_schedule((2, 3, 4, 5), seed=0, steps=3)


def test_resume_reproduces_the_count_sequence_exactly(tmp_path, tiny_teacher_file):
    kw = dict(KW, nfe="1-3", trajectories=36)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "straight"), **kw)
    import shutil
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    d = tmp_path / "resumed"
    first, *later = sorted((d / "checkpoints").glob("state-*.safetensors"))
    for c in later:  # as if killed right after the first kept checkpoint (its metrics rows up to there)
        c.unlink()
    (d / "model.safetensors").unlink()
    at = int(first.stem.split("-")[1])
    assert 0 < at < 9
    (d / "metrics.jsonl").write_text("".join((d / "metrics.jsonl").read_text().splitlines(True)[:at]))
    distill_sfd(str(tiny_teacher_file), str(d), resume=True, **kw)
    a, meta_a = _weights(tmp_path / "straight" / "model.safetensors")
    b, meta_b = _weights(d / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    import json
    seq = [json.loads(r)["nfe"] for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert seq == [json.loads(r)["nfe"] for r in (d / "metrics.jsonl").read_text().splitlines()]
    assert seq == [n for n, _ in nfe_schedule((1, 2, 3), 1, 9)] and sorted(seq) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    _, m = _state_meta(d / "checkpoints")
    assert m["task"]["nfe_drawn"] == seq
    cfg = json.loads(meta_a["config"])
    assert cfg["nfe_embedding"] == {"counts": [1, 2, 3]} and cfg["meta"]["distill"]["method"] == "sfd-v"
    assert cfg["meta"]["distill"]["iterations_per_nfe"] == {"1": 3, "2": 3, "3": 3}


def _state_meta(ckdir):
    path = sorted(ckdir.glob("state-*.safetensors"))[-1]
    import json
    with safe_open(str(path), framework="pt") as f:
        return path, json.loads(f.metadata()["meta"])


def test_a_resume_that_would_draw_other_counts_is_refused(tmp_path, tiny_teacher_file):
    from bdense.distill.sfd.sfdv import SFDvTask as T
    task = T.__new__(T)
    task.schedule = nfe_schedule((2, 3), 0, 6)
    task.load_extra_state({}, {"nfe_drawn": [n for n, _ in task.schedule[:3]]})
    with pytest.raises(BdenseError, match="another NFE sequence"):
        task.load_extra_state({}, {"nfe_drawn": [5 - n for n, _ in task.schedule[:3]]})


def test_sfdv_student_samples_exports_and_trains_from_per_count_caches(tmp_path, tiny_teacher_file):
    from bdense.distill.sfd.cache import write_cache
    from bdense.io import file_digest
    from bdense.sampling.recipe import off_grid_note
    from bdense.sampling.sample import generate, model_recipe
    teacher = load_model(tiny_teacher_file)
    kw = dict(KW, nfe="2,3", trajectories=16, checkpoint_every=0)
    for n in (2, 3):
        plan = SFDPlan(nfe=n, substeps=2, teacher_solver="euler")
        write_cache(teacher, file_digest(tiny_teacher_file), plan, 8, tmp_path / "cache" / f"nfe{n}", batch=4,
                    shard_size=8, progress=False)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "fly"), **kw)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "cached"), trajectory_cache=str(tmp_path / "cache"), **kw)
    a, _ = _weights(tmp_path / "fly" / "model.safetensors")
    b, _ = _weights(tmp_path / "cached" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # per-count caches serve exactly the on-the-fly trajectories
    with pytest.raises(BdenseError, match="needs 12"):
        distill_sfd(str(tiny_teacher_file), str(tmp_path / "x"), trajectory_cache=str(tmp_path / "cache"),
                    **dict(kw, trajectories=24))
    student = load_model(tmp_path / "fly" / "model.safetensors")
    assert student.nfe_counts == (2, 3) and model_recipe(student).nfe == 3
    seeds = [0, 1, 2]
    for n in (2, 3):
        rec = model_recipe(student).with_overrides(nfe=n)
        ims = torch.cat([im for _, im, _ in generate(student, seeds, rec)])
        folded = fold_nfe(student, n)  # the diffusers export's model: the count written into a bias
        assert not folded.nfe_counts and model_recipe(folded).nfe == n
        ims_f = torch.cat([im for _, im, _ in generate(folded, seeds, model_recipe(folded))])
        assert torch.allclose(ims, ims_f, atol=1e-5)
    with pytest.raises(BdenseError, match="not --nfe 4"):
        list(generate(student, seeds, model_recipe(student).with_overrides(nfe=4)))
    assert bind_nfe(teacher, 4) is teacher  # plain models serve any grid, as before
    # `bdense sample` notes a student sampled off its trained grid: never at a trained count of an SFD-v student
    rec = model_recipe(student)
    assert off_grid_note(student.config, rec.with_overrides(nfe=2), student.nfe_counts) == ""
    note = off_grid_note(student.config, rec.with_overrides(nfe=4, solver="heun"), student.nfe_counts)
    assert "NFE 3;" in note and "nfe 3 -> 4" in note and "solver euler -> heun" in note, note
    plain = fold_nfe(student, 2)
    assert "nfe 2 -> 3" in off_grid_note(plain.config, model_recipe(plain).with_overrides(nfe=3))
    assert off_grid_note(teacher.config, model_recipe(teacher).with_overrides(nfe=7)) == ""  # teachers: any grid
    back = load_model(save_model(tmp_path / "again.safetensors", copy.deepcopy(student)))
    assert back.nfe_counts == (2, 3)


def test_export_writes_one_nfe_or_keeps_the_embedding(tmp_path, tiny_teacher_file):
    from bdense.models.export import export_model
    from bdense.sampling.sample import generate, model_recipe
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "run"), **dict(KW, nfe="2-3", trajectories=8,
                                                                       checkpoint_every=0))
    src = tmp_path / "run" / "model.safetensors"
    student = load_model(src)
    with torch.no_grad():  # as if trained further: the counts differ, so a wrong fold would show
        student.nfe_embed.linear_2.weight.normal_(0, 0.1)
    src = save_model(tmp_path / "trained.safetensors", student)
    seeds = [0, 1, 2, 3]
    for n in (2, 3):
        folder = export_model(src, tmp_path / f"diffusers-nfe{n}", "diffusers", nfe=n)
        back = load_model(folder)  # bdense reads the folder's bdense.json: a plain K = 1 model with the NFE-n recipe
        assert back.branches == 1 and not back.nfe_counts and model_recipe(back).nfe == n
        want = torch.cat([im for _, im, _ in generate(student, seeds, model_recipe(student).with_overrides(nfe=n))])
        got = torch.cat([im for _, im, _ in generate(back, seeds, model_recipe(back))])
        assert torch.allclose(want, got, atol=1e-5)
    other = torch.cat([im for _, im, _ in generate(load_model(tmp_path / "diffusers-nfe2"), seeds,
                                                   model_recipe(student).with_overrides(nfe=3))])
    assert not torch.allclose(other, got, atol=1e-3)  # the count written into the weights matters
    kept = load_model(export_model(src, tmp_path / "kept.safetensors"))  # bdense format: the embedding stays
    assert kept.branches == 1 and kept.nfe_counts == (2, 3)
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 0.5])
    assert torch.equal(kept(x, s, nfe=3), student(x, s, nfe=3)[:, -1:])


def test_sfdv_settings_for_comparisons(tiny_teacher):
    from bdense.studies.sfdv import SFDvSetting, is_sfdv_setting, recipe_at
    s = SFDvSetting.parse("v-bdense:4:uniform:2-5")
    assert (s.name, s.branches, s.weights, s.counts, s.draw) == ("v-bdense", 4, "uniform", (2, 3, 4, 5), "balanced")
    assert s.distill_options(3200)["trajectories"] == 12800
    s = SFDvSetting.parse("v:2:1,2:nfe=2,5:targets=teacher:draw=iid")
    assert (s.weights, s.counts, s.targets, s.draw) == ("1,2", (2, 5), "teacher", "iid")
    assert SFDvSetting.parse("v-base:1:2-3").weights is None
    assert is_sfdv_setting("v-base:1:2-5") and not is_sfdv_setting("bdense:4:1,1,1,2")
    assert not is_sfdv_setting("d:4:decay:cosine:0:0.2-0.8")  # a weight schedule's fraction range is not NFE
    for bad, msg in (("v:4:uniform", "names no NFE"), ("v:x:2-5", "cannot read"), ("v:4:2-9", "--nfe"),
                     ("v:2:1,2,3:2-5", "give exactly 2"), ("v:1:nfe=3", "has one NFE"), ("v:1:2-5:draw=x", "draw"),
                     ("v:1:2-5:foo=1", "unknown option")):
        with pytest.raises(BdenseError, match=msg):
            SFDvSetting.parse(bad)
    student = with_nfe_embedding(widen(tiny_teacher, 1), (2, 3))
    student.config["meta"] = {"sampling": {"solver": "euler", "nfe": 3, "afs": True, "final_zero": False,
                                           "sigma_min": 0.006}}
    assert recipe_at(student, 2).nfe == 2
    plain = widen(tiny_teacher, 1)
    plain.config["meta"] = dict(student.config["meta"])
    assert recipe_at(plain, 3).nfe == 3
    with pytest.raises(BdenseError, match="distilled for NFE 3, not 2"):
        recipe_at(plain, 2)
