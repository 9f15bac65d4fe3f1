"""Issue 12 beyond one-line refusals: files that name other files, non-finite weights never written, options that
shape a teacher's data travel with it, a grid checked before any work."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import run_cli  # noqa: E402

from bdense.errors import BdenseError  # noqa: E402


def _ok(argv):
    code, out, err = run_cli([str(a) for a in argv])
    assert code == 0 and "Traceback" not in err, err[-3000:]
    return out


def test_a_student_finds_its_teacher_after_the_folder_moves(tmp_path, tiny_teacher_file, monkeypatch):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(tiny_teacher_file, proj / "teacher.safetensors")
    monkeypatch.chdir(proj)  # relative paths as a user types them
    _ok(["distill", "--teacher", "teacher.safetensors", "--out", "runs/s", "--trajectories", "8", "--batch", "8",
         "--teacher-solver", "euler", "--device", "cpu"])
    from bdense.models.checkpoint import read_config
    meta = read_config(proj / "runs/s/model.safetensors")["meta"]
    assert meta["teacher_rel"] == "../../teacher.safetensors" and Path(meta["teacher"]).is_absolute()
    moved = tmp_path / "elsewhere" / "proj"
    shutil.move(str(proj), str(moved))  # the absolute path is now stale; the relative one still holds
    monkeypatch.chdir(tmp_path)
    out = _ok(["agreement", "--model", moved / "runs/s/model.safetensors", "--seeds", "0-1", "--device", "cpu"])
    assert "RMSE" in out
    (moved / "teacher.safetensors").write_bytes((moved / "teacher.safetensors").read_bytes() + b" ")
    code, _, err = run_cli(["agreement", "--model", str(moved / "runs/s/model.safetensors"), "--seeds", "0-1"])
    assert code == 2 and "has changed" in err and "pass --teacher PATH" in err


def test_reference_statistics_find_their_feature_network_after_the_folder_moves(tmp_path, digits_assets,
                                                                                 monkeypatch):
    _, features = digits_assets
    d = tmp_path / "fid"
    d.mkdir()
    shutil.copy(features, d / "features.safetensors")
    monkeypatch.chdir(d)
    _ok(["fid", "ref", "--data", "digits", "--extractor", "domain", "--features", "features.safetensors",
         "--out", "ref.npz", "--max", "200", "--device", "cpu"])
    import numpy as np
    np.savez(d / "samples.npz", images=np.zeros((8, 8, 8), np.uint8))
    shutil.move(str(d), str(tmp_path / "moved"))
    monkeypatch.chdir(tmp_path)
    out = _ok(["fid", "calc", "--ref", tmp_path / "moved/ref.npz", "--samples", tmp_path / "moved/samples.npz"])
    assert out.startswith("FID ")
    (tmp_path / "moved/features.safetensors").unlink()
    code, _, err = run_cli(["fid", "calc", "--ref", str(tmp_path / "moved/ref.npz"),
                            "--samples", str(tmp_path / "moved/samples.npz")])
    assert code == 2 and "pass --features PATH" in err and "retrain" not in err.split("(")[0]


def test_non_finite_weights_are_never_written(tmp_path, tiny_teacher):
    from bdense.models.checkpoint import save_model
    from bdense.train.loop import Task, TrainConfig, Trainer
    from bdense.train.rundir import RunDir
    with torch.no_grad():
        tiny_teacher.net.conv_in.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(BdenseError, match="'net.conv_in.weight' holds NaN"):
        save_model(tmp_path / "m.safetensors", tiny_teacher)
    assert not list(tmp_path.iterdir())

    class Blows(Task):  # finite gradients, but the weights overflow at step 3 (e.g. a huge update)
        name = "blows"

        def __init__(self):
            self.model = torch.nn.Linear(3, 1)

        def train_step(self, tr, step):
            tr.backward(self.model(torch.ones(2, 3)).pow(2).mean())
            tr.step()
            if step == 2:
                with torch.no_grad():
                    self.model.weight.fill_(float("inf"))
            return {}
    tr = Trainer(Blows(), RunDir(tmp_path / "run", {}), TrainConfig(steps=4, checkpoint_every=2, progress=False,
                                                                    device="cpu"))
    with pytest.raises(BdenseError, match="'model/weight' holds NaN or Inf"):
        tr.run()
    assert [p.name for p in (tmp_path / "run/checkpoints").iterdir()] == ["state-000000002.safetensors"]


def test_the_data_shape_travels_with_a_16px_teacher(tmp_path, digits_assets):
    """A VP teacher trained on digits black-padded to 16 px: PD, compare's feature net and reference statistics, and
    train-features all rebuild its data padded to 16 px (issue 12 item 9)."""
    from bdense.data.datasets import load_dataset, teacher_data
    from bdense.distill.pd.run import _load_data
    from bdense.studies.compare import CompareConfig, Comparison, Setting
    from bdense.models.checkpoint import load_model
    _ok(["train-teacher", "--data", "digits", "--resolution", "16", "--pad", "pad", "--preset", "tiny", "--steps",
         "2", "--batch", "8", "--parameterization", "v", "--out", tmp_path / "t", "--device", "cpu"])
    teacher = load_model(tmp_path / "t/model.safetensors")
    assert teacher.config["meta"]["data_shape"] == {"resolution": 16, "pad": "pad"}
    assert teacher_data(teacher) == {"spec": "digits", "resolution": 16, "pad": "pad"}
    padded = load_dataset("digits", resolution=16, pad="pad").images
    _, data = _load_data(None, teacher, "t")
    assert torch.equal(data.images, padded) and (data.images[:, :, :4] == -1).all()  # padded, not resized
    cmp = Comparison(CompareConfig(str(tmp_path / "t/model.safetensors"), str(tmp_path / "c"), nfes=(2,),
                                   settings=(Setting("baseline", 1),), seeds=1, trajectories=8, batch=8,
                                   eval_seeds=8, feature_steps=3, progress=False, device="cpu"))
    ext, ref = cmp.extractor_and_ref()
    assert ext.config["arch"]["resolution"] == 16 and ext.config["pad"] == "pad"
    from bdense.metrics.fid import feature_stats
    direct = feature_stats(ext, padded.split(500))
    assert float(abs(direct.mu - ref["mu"]).max()) < 1e-9  # the reference is of the padded data
    out = _ok(["train-features", "--data", "digits", "--resolution", "16", "--pad", "pad", "--steps", "2",
               "--out", tmp_path / "f16.safetensors"])
    assert "wrote" in out
    kw = dict(nfes=(2,), settings=(Setting("baseline", 1),), progress=False, device="cpu")
    Comparison(CompareConfig(str(tmp_path / "t/model.safetensors"), str(tmp_path / "c2"),
                             features=str(tmp_path / "f16.safetensors"), **kw))  # a 16 px net for a 16 px teacher
    with pytest.raises(BdenseError, match="--resolution 16"):
        Comparison(CompareConfig(str(tmp_path / "t/model.safetensors"), str(tmp_path / "c3"),
                                 features=digits_assets[1], **kw))


def test_the_compare_grid_is_checked_before_anything_is_made(tmp_path, tiny_teacher_file):
    from bdense.studies.compare import CompareConfig, Setting
    for kw, msg in ((dict(settings=(Setting("baseline", 1), Setting("b", 3))), "divides"),
                    (dict(eval_points=(0.0, 1.0)), r"\(0, 1\]"), (dict(seeds=0), "--seeds"),
                    (dict(nfes=(2, 9)), "--nfe"), (dict(eval_seeds=1), "--eval-seeds")):
        with pytest.raises(BdenseError, match=msg):
            CompareConfig(str(tiny_teacher_file), str(tmp_path / "c"), **kw)
    assert not (tmp_path / "c").exists()
    assert CompareConfig(str(tiny_teacher_file), "c", eval_points=(0.25, 0.5)).eval_points == (0.25, 0.5, 1.0)


def test_nan_in_a_training_checkpoint_or_a_trajectory_shard_is_refused_on_load(tmp_path, tiny_teacher):
    from safetensors.torch import save_file

    from bdense.distill.sfd.cache import TrajectoryCache, write_cache
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.train.rundir import RunDir
    run = RunDir(tmp_path / "run", {})
    run.save_state(1, {"model/w": torch.ones(2)}, {})
    bad = run.ckpt_dir / "state-000000002.safetensors"
    save_file({"model/w": torch.tensor([1.0, float("nan")])}, str(bad),
              metadata={"format": "bdense-train-state", "meta": "{}"})
    with pytest.raises(BdenseError, match="'model/w' holds NaN.*delete it to resume from the checkpoint before"):
        run.load_state()
    assert run.load_state(run.checkpoints()[0])[0]["model/w"].tolist() == [1.0, 1.0]
    plan = SFDPlan(nfe=1, substeps=1, teacher_solver="euler")
    cache = write_cache(tiny_teacher, "d", plan, 4, tmp_path / "cache", batch=2, shard_size=2, progress=False)
    shard = cache / "shard-00001.safetensors"
    from safetensors.torch import load_file
    t = load_file(str(shard))
    t["traj"][0, 0, 0, 0, 0] = float("inf")
    save_file(t, str(shard), metadata={"format": "bdense-trajectories", "first": "2"})
    c = TrajectoryCache.open(cache)
    assert c.batch([0, 1], "cpu")[0].isfinite().all()
    with pytest.raises(BdenseError, match="shard-00001.*'traj' holds NaN or Inf"):
        c.batch([2], "cpu")
