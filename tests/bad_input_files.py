"""The files the bad-input cases refer to: good and broken models, data, statistics, caches and run directories."""
from __future__ import annotations

import json
import os
import pickle
import shutil
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
    p.update(make_round3(root, t, p))
    out = {k: str(v) for k, v in p.items()}
    out["root"] = str(root)
    return out


def poison(path: Path) -> None:
    """Write NaN into the first floating-point tensor of a safetensors file, keeping its header metadata."""
    from safetensors import safe_open
    from safetensors.torch import save as st_save
    with safe_open(str(path), framework="pt") as f:
        md, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    path.write_bytes(st_save(tensors, metadata=md))


def make_round3(root: Path, t, p: dict) -> dict:
    """Issue 26's files: user folders, damaged run directories, export folders, caches, a compare folder."""
    from PIL import Image
    from safetensors.torch import save as st_save

    from bdense.distill.sfd.cache import write_cache
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.io import file_digest
    from bdense.models.checkpoint import save_model
    from bdense.models.export import export_model
    out = {}
    user = root / "userdir"  # a folder of the user's own files: no writer may put anything into it
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    imgs = root / "imgs"  # a folder:PATH data set
    imgs.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(imgs / f"{i}.png")
    shelf = root / "shelf"  # a teachers folder with a teacher already on it
    shelf.mkdir()
    (shelf / "mnist.safetensors").write_bytes(Path(p["teacher"]).read_bytes())
    (shelf / "mnist.md").write_text("# the shipped card\n")
    done = root / "done-run"  # a finished teacher run whose checkpoints/ was deleted
    done.mkdir()
    (done / "options.json").write_text(json.dumps({"command": "train-teacher", "data": "digits"}))
    save_model(done / "model.safetensors", t)
    noopts = root / "noopts-run"  # a finished student whose options.json was deleted
    (noopts / "checkpoints").mkdir(parents=True)
    save_model(noopts / "model.safetensors", t)
    (noopts / "checkpoints" / "state-000000002.safetensors").write_bytes(b"x")
    started = root / "started-run"  # a run killed before its first checkpoint, with other options
    started.mkdir()
    (started / "options.json").write_text(json.dumps({"command": "train-teacher", "data": "digits", "steps": 5}))
    # diffusers exports: good, one NaN in the UNet, no bdense.json, bdense.json without `net`
    export_model(p["student"], root / "exp-good", "diffusers")
    for name in ("exp-nan", "exp-nojson", "exp-nonet"):
        shutil.copytree(root / "exp-good", root / name)
    poison(root / "exp-nan" / "unet" / "diffusion_pytorch_model.safetensors")
    (root / "exp-nojson" / "bdense.json").unlink()
    cfg = json.loads((root / "exp-nonet" / "bdense.json").read_text())
    del cfg["net"]
    (root / "exp-nonet" / "bdense.json").write_text(json.dumps(cfg))
    out["sfdv3"] = export_model(p["sfdv"], root / "sfdv3.safetensors", nfe=3)
    bad = dict(t.config, sigma_min=80.0, sigma_max=0.002)  # a teacher whose sigma range runs backwards
    (root / "badsigma.safetensors").write_bytes(st_save({k: v.contiguous() for k, v in t.state_dict().items()},
                                                        metadata={"format": "bdense-model",
                                                                  "config": json.dumps(bad)}))
    # trajectory caches of two shards: one shard replaced by a copy of the other, one cut short
    plan = SFDPlan(nfe=2, substeps=4, teacher_solver="dpmpp_3m", sigma_max=min(80.0, t.sigma_max))
    write_cache(t, file_digest(p["teacher"]), plan, 16, root / "cache-swap", batch=8, shard_size=8, progress=False)
    shutil.copytree(root / "cache-swap", root / "cache-cut")
    shard0 = (root / "cache-swap" / "shard-00000.safetensors").read_bytes()
    (root / "cache-swap" / "shard-00001.safetensors").write_bytes(shard0)
    (root / "cache-cut" / "shard-00001.safetensors").write_bytes(shard0[: len(shard0) // 2])
    # a comparison folder measured with another feature network, and one whose reference stats are another's
    for name, edit in (("cmp-protocol", "protocol"), ("cmp-ref", "ref")):
        d = root / name
        d.mkdir()
        shutil.copyfile(root / "stats.npz", d / "ref-stats.npz")
        if edit == "protocol":
            (d / "protocol.json").write_text(json.dumps({"extractor": "domain", "extractor_digest": "0123456789abcdef",
                                                         "data": "digits"}))
        else:
            with np.load(d / "ref-stats.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            info = json.loads(str(arrays["info"]))
            arrays["info"] = np.array(json.dumps(dict(info, extractor_digest="0123456789abcdef")))
            np.savez(d / "ref-stats.npz", **arrays)
    (root / "tune-bad").mkdir()
    (root / "tune-bad" / "optuna.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)  # a cut database
    return out
