"""The trajectory cache: students trained from it are bit-identical to on-the-fly ones; foreign caches are refused."""
import json

import pytest
import torch

from bdense.distill.sfd.run import distill_sfd
from bdense.io import file_digest
from bdense.errors import BdenseError
from bdense.models.checkpoint import load_model


def _sfd(teacher, out, **kw):
    args = dict(nfe=1, branches=2, trajectories=16, batch=8, lr=1e-3, progress=False, device="cpu", grid_seeds=4,
                teacher_solver="euler", teacher_substeps=2)
    args.update(kw)
    return distill_sfd(str(teacher), str(out), **args)


def test_cached_student_is_bit_identical(tmp_path, tiny_teacher_file):
    from bdense.distill.sfd.cache import write_cache
    from bdense.distill.sfd.plan import SFDPlan
    teacher = load_model(tiny_teacher_file)
    plan = SFDPlan(nfe=1, substeps=2, teacher_solver="euler")
    write_cache(teacher, file_digest(tiny_teacher_file), plan, 16, tmp_path / "cache", batch=8, shard_size=8,
                progress=False)
    for seed in (0, 3):
        _sfd(tiny_teacher_file, tmp_path / f"live{seed}", seed=seed)
        _sfd(tiny_teacher_file, tmp_path / f"cached{seed}", seed=seed, trajectory_cache=str(tmp_path / "cache"))
        a = load_model(tmp_path / f"live{seed}" / "model.safetensors").state_dict()
        b = load_model(tmp_path / f"cached{seed}" / "model.safetensors").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    ma = load_model(tmp_path / "live0" / "model.safetensors").state_dict()
    mb = load_model(tmp_path / "live3" / "model.safetensors").state_dict()
    assert not all(torch.equal(ma[k], mb[k]) for k in ma), "training seeds must change the trajectory order"


def test_cache_refuses_other_grid_teacher_or_incomplete(tmp_path, tiny_teacher_file):
    from bdense.distill.sfd.cache import write_cache
    from bdense.distill.sfd.plan import SFDPlan
    teacher = load_model(tiny_teacher_file)
    write_cache(teacher, file_digest(tiny_teacher_file), SFDPlan(nfe=1, substeps=2, teacher_solver="euler"), 8,
                tmp_path / "c", batch=8, shard_size=8, progress=False)
    with pytest.raises(BdenseError, match="another grid or teacher solver"):
        _sfd(tiny_teacher_file, tmp_path / "r1", trajectories=8, nfe=2, trajectory_cache=str(tmp_path / "c"))
    with pytest.raises(BdenseError, match="holds 8 trajectories"):
        _sfd(tiny_teacher_file, tmp_path / "r2", trajectories=16, trajectory_cache=str(tmp_path / "c"))
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    m["teacher_digest"] = "0" * 16
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BdenseError, match="another teacher"):
        _sfd(tiny_teacher_file, tmp_path / "r3", trajectories=8, trajectory_cache=str(tmp_path / "c"))
    m["teacher_digest"], m["complete"] = file_digest(tiny_teacher_file), False
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BdenseError, match="incomplete"):
        _sfd(tiny_teacher_file, tmp_path / "r4", trajectories=8, trajectory_cache=str(tmp_path / "c"))


def test_cache_made_with_another_teacher_rule_is_refused(tmp_path, tiny_teacher_file):
    """Thresholding and the order rule change the trajectories: a cache made one way is refused for a run that wants
    the other, and a manifest from before SFD's exact teacher means what it meant then (rule 'tail', no threshold)."""
    from bdense.distill.sfd.cache import write_cache
    from bdense.distill.sfd.plan import SFDPlan
    teacher = load_model(tiny_teacher_file)
    dpm = dict(teacher_solver="dpmpp_3m", teacher_substeps=2, trajectories=8)
    write_cache(teacher, file_digest(tiny_teacher_file), SFDPlan(nfe=1, substeps=2), 8, tmp_path / "c", batch=8,
                shard_size=8, progress=False)
    assert json.loads((tmp_path / "c/manifest.json").read_text())["plan"]["teacher_threshold"] == "dynamic"
    with pytest.raises(BdenseError, match=r"teacher_threshold=dynamic \(this run: none\)"):
        _sfd(tiny_teacher_file, tmp_path / "r1", teacher_threshold="none", trajectory_cache=str(tmp_path / "c"), **dpm)
    assert _sfd(tiny_teacher_file, tmp_path / "r2", trajectory_cache=str(tmp_path / "c"), **dpm)["completed"]
    m = json.loads((tmp_path / "c/manifest.json").read_text())
    for k in ("teacher_threshold", "teacher_history"):
        del m["plan"][k]  # as written before the fields existed
    (tmp_path / "c/manifest.json").write_text(json.dumps(m))
    with pytest.raises(BdenseError, match=r"teacher_order_rule=tail \(this run: sfd\), teacher_threshold=none"):
        _sfd(tiny_teacher_file, tmp_path / "r3", trajectory_cache=str(tmp_path / "c"), **dpm)
    assert _sfd(tiny_teacher_file, tmp_path / "r4", trajectory_cache=str(tmp_path / "c"), teacher_order_rule="tail",
                teacher_threshold="none", **dpm)["completed"]
