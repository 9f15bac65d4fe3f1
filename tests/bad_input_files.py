"""The files the bad-input cases refer to: good and broken models, data, statistics, caches and run directories."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

MARKER = "pwned-marker"


class Planted:
    """A pickle that, if unpickled by plain pickle.load, creates MARKER in the folder: code from a data folder."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_cifar(root: Path, n: int = 2, planted: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(x) for x in range(n)],
                 b"batch_label": b"training batch", b"filenames": [b"a.png"] * n}
        if planted and i == 1:
            batch[b"extra"] = Planted(root / MARKER)
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch, fh, protocol=4)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{k}".encode() for k in range(10)]}, fh, protocol=4)
    return root


def _header_model(path: Path, config: str) -> None:
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "bdense-model", "config": config})


def make_files(root: Path) -> dict:
    """Write every file the cases name into `root`; returns {key: path} for the command templates."""
    from safetensors.torch import save_file

    from bdense.metrics.features import train_domain_classifier
    from bdense.metrics.fid import RunningStats, save_stats
    from bdense.io import file_digest
    from bdense.models.branches import widen
    from bdense.models.checkpoint import save_model
    from bdense.models.factory import new_model
    torch.manual_seed(0)
    t = new_model("edm", 1, 8, preset="tiny", data="digits").eval()
    teacher = save_model(root / "teacher.safetensors", t)
    link = {"teacher": str(teacher.resolve()), "teacher_rel": "teacher.safetensors",
            "teacher_digest": file_digest(teacher)}
    s = widen(t, 2)
    p = {"teacher": teacher,
         "student": save_model(root / "student.safetensors", s, dict(t.config["meta"], role="student", **link)),
         "t16": save_model(root / "teacher16.safetensors", new_model("v", 1, 16, preset="tiny", data="mnist")),
         "vp8": save_model(root / "vp8.safetensors", new_model("v", 1, 8, preset="tiny", data="digits"))}
    (root / "moved").mkdir()
    p["moved"] = save_model(root / "moved" / "student.safetensors", s, dict(
        t.config["meta"], role="student", teacher="teacher.safetensors", teacher_rel="teacher.safetensors",
        teacher_digest=link["teacher_digest"]))
    p["changed"] = save_model(root / "changed-student.safetensors", s, dict(link, teacher_digest="0123456789abcdef"))
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        bad = new_model("edm", 1, 8, preset="tiny", data="digits")
        with torch.no_grad():
            bad.net.conv_out.weight[0, 0, 0, 0] = value
        from safetensors.torch import save as st_save  # written by hand: save_model itself refuses NaN
        tensors = {k: v.contiguous() for k, v in bad.state_dict().items()}
        raw = st_save(tensors, metadata={"format": "bdense-model", "config": json.dumps(bad.config)})
        (root / f"{name}.safetensors").write_bytes(raw)
        p[name] = root / f"{name}.safetensors"
    vbad = new_model("v", 1, 8, preset="tiny", data="digits")
    with torch.no_grad():
        vbad.net.conv_in.bias[0] = float("nan")
    from safetensors.torch import save as st_save
    (root / "nan-vp.safetensors").write_bytes(st_save({k: v.contiguous() for k, v in vbad.state_dict().items()},
                                                      metadata={"format": "bdense-model",
                                                                "config": json.dumps(vbad.config)}))
    for name, edit in (("badrecipe", {"meta": dict(t.config["meta"], sampling={"nfe": "many"})}),
                       ("extrarecipe", {"meta": dict(t.config["meta"], sampling={"steps": 3})}),
                       ("huge", {"resolution": 10**6})):
        cfg = dict(t.config, **edit)
        (root / f"{name}.safetensors").write_bytes(st_save(
            {k: v.contiguous() for k, v in t.state_dict().items()},
            metadata={"format": "bdense-model", "config": json.dumps(cfg)}))
    raw = teacher.read_bytes()
    (root / "truncated.safetensors").write_bytes(raw[: len(raw) // 3])
    save_file({"w": torch.zeros(3)}, str(root / "foreign.safetensors"))
    torch.save({"w": torch.zeros(3)}, root / "pickled.pt")
    _header_model(root / "badjson.safetensors", "{not json")
    _header_model(root / "listconfig.safetensors", "[1, 2]")
    _header_model(root / "noconfig.safetensors", '{"kind": "edm"}')
    # data
    bad = np.zeros((4, 8, 8), np.float32)
    bad[0, 0, 0] = np.nan
    np.savez(root / "nan.npz", images=bad)
    np.savez(root / "range.npz", images=np.full((4, 8, 8), 7.0, np.float32))
    np.savez(root / "images.npz", images=np.zeros((4, 8, 8), np.uint8))
    np.save(root / "images.npy", np.zeros((4, 8, 8), np.uint8))
    np.savez(root / "objects.npz", images=np.array([{"a": 1}, None], dtype=object))
    (root / "notzip.npz").write_text("this is not a zip file")
    write_cifar(root / "cifar-evil", planted=True)
    write_cifar(root / "cifar-good")
    lst = write_cifar(root / "cifar-list")
    with open(lst / "data_batch_3", "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    # feature network and statistics
    train_domain_classifier("digits", root / "features.safetensors", steps=2, log=None)
    from bdense.metrics.features import load_extractor
    ext = load_extractor("domain", root / "features.safetensors")
    from bdense.data.datasets import load_dataset
    st = RunningStats().update(ext(load_dataset("digits").images[:64]))
    save_stats(root / "stats.npz", st, ext, data="digits", channels=1, resolution=8,
               features_path=str((root / "features.safetensors").resolve()), features_rel="features.safetensors")
    (root / "stats-moved").mkdir()
    save_stats(root / "stats-moved" / "stats.npz", st, ext, data="digits", channels=1, resolution=8,
               features_path="gone/features.safetensors", features_rel="gone/features.safetensors")
    info = json.dumps(dict(format="bdense-fid-stats", extractor=ext.name, extractor_digest=ext.digest, n=64,
                           data="digits", channels=1, resolution=8))
    mu = np.zeros(ext.dim)
    mu[3] = np.nan
    np.savez(root / "stats-nan.npz", mu=mu, sigma=np.eye(ext.dim), n=np.int64(64), info=np.array(info))
    np.savez(root / "stats-badjson.npz", mu=np.zeros(ext.dim), sigma=np.eye(ext.dim), n=np.int64(64),
             info=np.array("{oops"))
    train_domain_classifier("digits", root / "features16.safetensors", steps=1, log=None, resolution=16)
    # run directories, caches, diffusers folders, plain files
    (root / "a-file").write_text("x")
    os.mkfifo(root / "fifo")
    (root / "existing.npz").write_bytes(b"not made by bdense")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "options.json").write_text(json.dumps({"command": "other"}))
    (run / "checkpoints" / "state-000000001.safetensors").write_bytes(b"old")
    badrun = root / "badrun"
    (badrun / "checkpoints").mkdir(parents=True)
    (badrun / "options.json").write_text("{truncated")
    (root / "trun").mkdir()
    p["trun"] = save_model(root / "trun" / "model.safetensors", t)
    (root / "cache-bad").mkdir()
    (root / "cache-bad" / "manifest.json").write_text('{"format": "bdense-trajectories", ')
    for name, cfg in (("diffusers-bad", "{"), ("diffusers-pickle", json.dumps({"sample_size": 8}))):
        d = root / name / "unet"
        d.mkdir(parents=True)
        (d / "config.json").write_text(cfg)
        (root / name / "scheduler").mkdir()
        (root / name / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    torch.save({}, root / "diffusers-pickle" / "unet" / "diffusion_pytorch_model.bin")
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.run import sfd_student_recipe
    from bdense.models.nfe_embedding import with_nfe_embedding
    v = with_nfe_embedding(s, (2, 3))  # an SFD-v student for NFE 2 and 3 (made last: it draws random numbers)
    vmeta = dict(t.config["meta"], role="student", sampling=sfd_student_recipe(SFDPlan(nfe=3)), **link)
    p["sfdv"] = save_model(root / "sfdv.safetensors", v, vmeta)
    v.config = dict(v.config, nfe_embedding={"counts": [3]})
    save_model(root / "sfdv-corrupt.safetensors", v, vmeta)
    out = {k: str(v) for k, v in p.items()}
    out["root"] = str(root)
    return out
