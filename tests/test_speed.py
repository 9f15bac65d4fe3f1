"""GPU speed machinery, checked on CPU: the default CPU path is untouched, the fast path (fused Adam, no host sync
per step) computes the same training, big-batch teacher rollouts serve the same trajectories, compiled networks
keep their weights and files."""
import json

import pytest
import torch

from bdense.distill.sfd.plan import SFDPlan
from bdense.distill.sfd.run import distill_sfd
from bdense.distill.sfd.trajectories import teacher_trajectories, trajectory_seeds
from bdense.errors import BdenseError
from bdense.models.checkpoint import load_model
from bdense.train.loop import Task, TrainConfig, Trainer
from bdense.train.rundir import RunDir
from bdense.train.speed import PrefetchedTeacher
from test_precision import NaNEvery  # noqa: E402 (tests/ is on the path)

KW = dict(nfe=2, branches=2, trajectories=48, batch=8, lr=1e-3, progress=False, device="cpu", grid_seeds=4,
          teacher_solver="euler", teacher_substeps=2, log_every=1)


def losses(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run):
    return load_model(run / "model.safetensors").state_dict()


def test_cpu_default_is_the_plain_path(tmp_path):
    task = Task()
    task.model = torch.nn.Linear(2, 1)
    tr = Trainer(task, RunDir(tmp_path, {}), TrainConfig(steps=1, device="cpu"))
    assert tr.fast is False and not tr._inner_opt.defaults.get("fused")
    assert tr.value(torch.tensor(2.5)) == 2.5 and tr.values(torch.ones(2, 2)) == [[1.0, 1.0], [1.0, 1.0]]


def test_fast_path_trains_the_same_sfd_student(tmp_path, tiny_teacher_file):
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "plain"), fast_path="off", **KW)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "fast"), fast_path="on", **KW)
    a, b = losses(tmp_path / "plain"), losses(tmp_path / "fast")
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):  # metrics were device scalars on the fast path; logged as floats all the same
        assert set(ra) == set(rb) and all(isinstance(rb[k], (int, float)) for k in rb)
        for k in ra:
            if k.startswith("loss"):
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), k
    wa, wb = weights(tmp_path / "plain"), weights(tmp_path / "fast")
    w0 = load_model(tiny_teacher_file).state_dict()
    # fused and for-each Adam differ by float rounding; Adam turns rounding in near-zero gradients into updates
    # of up to lr, so compare the difference (every weight, whole) with how far training moved the weights
    assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
    moved = sum(float((wa[k] - w0[k]).norm() ** 2) for k in wa if wa[k].shape == w0[k].shape) ** 0.5
    apart = sum(float((wa[k] - wb[k]).norm() ** 2) for k in wa) ** 0.5
    assert apart < 0.02 * moved, (apart, moved)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # the fast path really ran (fused Adam)
    assert "fused Adam without host syncs True" in (tmp_path / "fast" / "log.txt").read_text()


def test_fast_path_skips_nonfinite_steps_on_the_device(tmp_path):
    runs = {}
    for mode in ("off", "on"):
        task = NaNEvery(lambda s: s % 3 == 1)
        tr = Trainer(task, RunDir(tmp_path / mode, {}), TrainConfig(steps=9, lr=1e-2, progress=False, device="cpu",
                                                                    fast_path=mode, log_every=4))
        res = tr.run()
        assert res["bad_steps"] == 3 and tr.opt_steps == 6
        runs[mode] = [p.detach().clone() for p in task.model.parameters()]
        assert isinstance(res["loss"], float)
    for a, b in zip(runs["off"], runs["on"]):
        assert torch.allclose(a, b, atol=1e-6)  # the skipped steps left no trace in weights or Adam's moments


def test_fast_path_stops_a_run_that_keeps_failing(tmp_path):
    task = NaNEvery(lambda s: s >= 2)
    tr = Trainer(task, RunDir(tmp_path, {}), TrainConfig(steps=100, lr=1e-2, progress=False, device="cpu",
                                                         max_bad_steps=5, fast_path="on", log_every=10))
    with pytest.raises(BdenseError, match="non-finite gradients"):
        tr.run()
    assert tr.step_idx == 10  # noticed at the first log line, not later
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


@pytest.mark.parametrize("run_seed", [0, 1])
def test_prefetched_teacher_serves_the_per_step_trajectories(tiny_teacher, run_seed):
    plan = SFDPlan(nfe=2, teacher_solver="euler", substeps=2)
    batch, steps = 4, 5
    src = PrefetchedTeacher(tiny_teacher, plan, run_seed, batch, steps * batch, factor=2)
    order = list(range(steps)) + [3, 4]  # then a resume in the middle of a block
    for step in order:
        seeds = trajectory_seeds(run_seed, step, batch, steps * batch)
        got, _ = src.batch(seeds, "cpu")
        want, _ = teacher_trajectories(tiny_teacher, plan, seeds, "cpu")
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), step
    assert src.rollouts == 4  # steps 0-1, 2-3, 4, then 3-4 again after the jump back


def test_distill_with_teacher_batch_and_compiled_student(tmp_path, tiny_teacher_file, monkeypatch):
    """A bigger teacher batch changes only float rounding; a compiled student (dynamo, eager backend here) trains
    the same weights and saves the same keys."""
    monkeypatch.setenv("BDENSE_COMPILE_BACKEND", "eager")
    kw = dict(KW, trajectories=16, branches=1)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "ref"), **kw)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "big"), teacher_batch=16, **kw)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "comp"), compile_student=True, **kw)
    ref, big, comp = (weights(tmp_path / d) for d in ("ref", "big", "comp"))
    assert list(ref) == list(comp) == list(big)
    assert max(float((ref[k] - big[k]).abs().max()) for k in ref) < 1e-4
    assert all(torch.equal(ref[k], comp[k]) for k in ref)
    assert "first iteration" in (tmp_path / "comp" / "log.txt").read_text()
    with pytest.raises(BdenseError, match="multiple of --batch"):
        distill_sfd(str(tiny_teacher_file), str(tmp_path / "bad"), teacher_batch=12, **kw)  # not 8 x n


def test_compiled_teacher_training_trains_the_same_teacher(tmp_path, monkeypatch):
    """train-teacher --compile (dynamo, eager backend here) trains the same weights, saves the same keys, and
    samples its grid uncompiled."""
    from bdense.train.teacher import train_teacher
    monkeypatch.setenv("BDENSE_COMPILE_BACKEND", "eager")
    kw = dict(preset="tiny", steps=3, batch=8, lr=2e-3, progress=False, device="cpu", grid_seeds=4, log_every=1)
    train_teacher("digits", str(tmp_path / "ref"), **kw)
    train_teacher("digits", str(tmp_path / "comp"), compile=True, **kw)
    ref, comp = (weights(tmp_path / d) for d in ("ref", "comp"))
    assert list(ref) == list(comp) and all(torch.equal(ref[k], comp[k]) for k in ref)
    assert "torch.compile" in (tmp_path / "comp" / "log.txt").read_text()
