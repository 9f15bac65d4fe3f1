"""Issue 26's classes driven through their registries: every loader through the damaged-artefact cases, every trainer
through the run-directory lock and state check, every protocol key, interrupts that stop a compare as a whole.

The per-row cases (every writer through the output guard, every option of the method table) are rows of
tests/test_bad_input.py, generated from the same registries, so docs/bad-input.md lists them.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_files import poison  # noqa: E402
from bad_input_cases import OUTPUT_OPTIONS, WRITER_BASE, cli_commands, writers  # noqa: E402
from test_bad_input import run_cli  # noqa: E402

from bdense.errors import BdenseError  # noqa: E402

INPUT_OPTIONS = {"model", "teacher", "features", "ref", "samples", "inception_weights", "metrics"}


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """Small good artefacts every class test starts from (copied before it is damaged)."""
    from bdense.metrics.features import train_domain_classifier
    from bdense.models.branches import widen
    from bdense.models.checkpoint import save_model
    from bdense.models.factory import new_model
    root = tmp_path_factory.mktemp("classes")
    torch.manual_seed(0)
    t = new_model("edm", 1, 8, preset="tiny", data="digits").eval()
    vp = new_model("eps", 1, 8, preset="tiny", data="digits").eval()
    train_domain_classifier("digits", root / "features.safetensors", steps=1, log=None)
    return {"root": root, "t": t, "vp": vp, "teacher": save_model(root / "teacher.safetensors", t),
            "vp8": save_model(root / "vp8.safetensors", vp),
            "student": save_model(root / "student.safetensors", widen(t, 2), dict(t.config["meta"], role="student")),
            "features": root / "features.safetensors"}


# -- class 10: every output option is a registered writer -------------------------------------------------------------
def test_every_path_option_is_an_input_or_a_registered_writer():
    """A new output option must be named as one (OUTPUT_OPTIONS) and its command given a base line (WRITER_BASE):
    then tests/test_bad_input.py drives it through the output guard automatically."""
    paths = {p.name for c in cli_commands().values() for p in c.params if "Path" in str(p.type_descriptor.annotation)}
    assert paths <= INPUT_OPTIONS | set(OUTPUT_OPTIONS), paths - INPUT_OPTIONS - set(OUTPUT_OPTIONS)
    assert {name for name, _ in writers()} <= set(WRITER_BASE)


def test_export_never_deletes_what_lies_beside_its_output(art, tmp_path):
    """The model being exported may live in OUT.partial (a name the old export deleted): it survives, OUT is made."""
    src = tmp_path / "out.partial" / "model.safetensors"
    src.parent.mkdir()
    shutil.copyfile(art["student"], src)
    before = src.read_bytes()
    code, _, err = run_cli(["export", str(src), "--format", "diffusers", "--out", str(tmp_path / "out")])
    assert code == 0, err
    assert src.read_bytes() == before and (tmp_path / "out" / "bdense.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]  # no temporary folder left


def test_pack_refuses_a_shipped_teacher_of_that_name(art, tmp_path, monkeypatch):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (shelf / "mnist.safetensors").write_bytes(b"shipped")
    monkeypatch.setenv("BDENSE_TEACHERS", str(shelf))
    code, _, err = run_cli(["teachers", "pack", str(art["teacher"]), "--name", "mnist", "--check-seeds", "1"])
    assert code == 2 and "--overwrite" in err and (shelf / "mnist.safetensors").read_bytes() == b"shipped"


def test_sample_outdir_overwrite_replaces_the_folder_whole(art, tmp_path):
    out = tmp_path / "pngs"
    out.mkdir()
    (out / "000099.png").write_bytes(b"old")
    code, _, err = run_cli(["sample", str(art["teacher"]), "--seeds", "0-1", "--outdir", str(out)])
    assert code == 2 and "--overwrite" in err and _tree(out) == {"000099.png": hashlib.sha256(b"old").hexdigest()}
    code, _, err = run_cli(["sample", str(art["teacher"]), "--seeds", "0-1", "--outdir", str(out), "--overwrite"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs"]


def test_full_disk_during_outdir_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    from PIL import Image

    from bdense.data.images import save_pngs
    out = tmp_path / "pngs"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    calls = []
    real = Image.Image.save

    def save(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fp, *a, **k)
    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(BdenseError, match=f"disk full while writing {out}"):
        save_pngs(np.zeros((3, 8, 8, 1), np.uint8), [0, 1, 2], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs"] and [p.name for p in out.iterdir()] == ["old.png"]


# -- class 11: every trainer takes the lock and checks the state ---------------------------------------------------
TRAINERS = {  # a command line per command that trains, with OUT for its run/study folder
    "train-teacher": "train-teacher --preset tiny --steps 1 --data digits --out OUT",
    "distill": "distill --teacher {teacher} --trajectories 8 --batch 8 --out OUT",
    "distill --method pd": "distill --method pd --teacher {vp8} --round-iters 1 --start-steps 4 --end-steps 2 "
                           "--batch 8 --out OUT",
    "compare": "compare --teacher {teacher} --features {features} --out OUT",
    "tune": "tune --teacher {teacher} --features {features} --out OUT",
}
RUN_TRAINERS = ("train-teacher", "distill", "distill --method pd")  # those with a run directory


def _argv(line: str, art, out: Path) -> list[str]:
    return [w.replace("OUT", str(out)) for w in line.format(**{k: str(v) for k, v in art.items()}).split()]


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_a_second_process_on_the_folder_is_refused(art, tmp_path, trainer):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('held', flush=True); time.sleep(120)", str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(_argv(TRAINERS[trainer], art, out))
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "in use by another bdense process" in err, err
    assert _tree(out) == {}


def _finished(d: Path):
    (d / "options.json").write_text(json.dumps({"command": "other"}))
    (d / "model.safetensors").write_bytes(b"the model")


def _no_options(d: Path):
    (d / "model.safetensors").write_bytes(b"the model")


def _checkpoints_only(d: Path):
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "state-000000001.safetensors").write_bytes(b"a state")


def _other_options(d: Path):
    (d / "options.json").write_text(json.dumps({"command": "other", "steps": 5}))


STATES = {"finished run rerun": _finished, "model without options.json": _no_options,
          "checkpoints without options.json": _checkpoints_only, "started with other options": _other_options}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("resume", [False, True])
def test_the_run_state_check_refuses_and_changes_nothing(tmp_path, state, resume):
    """The one state check every trainer's RunDir runs: what is refused, with and without --resume."""
    from bdense.train.rundir import RunDir
    d = tmp_path / "run"
    d.mkdir()
    STATES[state](d)
    before = _tree(d)
    if resume and state == "finished run rerun":  # a finished run may be resumed: with its own options only
        RunDir(d, {"command": "other"}, resume=True)
        return
    with pytest.raises(BdenseError, match=str(d) if not resume or "options.json" in state else "differ"):
        RunDir(d, {"command": "mine"}, resume=resume)
    assert _tree(d) == before


@pytest.mark.parametrize("trainer", RUN_TRAINERS)
def test_every_run_trainer_refuses_a_finished_run(art, tmp_path, trainer):
    out = tmp_path / "out"
    out.mkdir()
    _finished(out)
    before = _tree(out)
    code, _, err = run_cli(_argv(TRAINERS[trainer], art, out))
    assert code == 2 and "already holds a run" in err, err
    assert _tree(out) == before


# -- class 13: every protocol key ----------------------------------------------------------------------------------
PROTOCOL = {"extractor": "domain", "extractor_digest": "a" * 16, "ref_sha256": "b" * 16, "ref_n": 1797,
            "data": "digits", "eval_seeds": "1000000000000-1000000000999", "weights": "raw (no EMA)",
            "agreement": "RMSE to the teacher reference"}


@pytest.mark.parametrize("key", list(PROTOCOL))
def test_a_changed_protocol_key_is_refused(tmp_path, key):
    from bdense.studies.protocol import check_folder, read_measured, write_measured
    check_folder(tmp_path, PROTOCOL)
    write_measured(tmp_path / "evals.json", {"100": {"fid": 1.0}}, PROTOCOL)
    check_folder(tmp_path, dict(PROTOCOL))  # the same protocol continues
    assert read_measured(tmp_path / "evals.json", PROTOCOL) == {"100": {"fid": 1.0}}
    other = dict(PROTOCOL, **{key: "changed"})
    with pytest.raises(BdenseError, match="another protocol"):
        check_folder(tmp_path, other)
    with pytest.raises(BdenseError, match="evals.json holds numbers measured with another protocol"):
        read_measured(tmp_path / "evals.json", other)


def test_a_folder_from_before_protocol_json_is_judged_by_its_results(tmp_path):
    from bdense.studies.protocol import ADDED, check_folder
    old = {k: v for k, v in PROTOCOL.items() if k not in ADDED}
    (tmp_path / "results.json").write_text(json.dumps({"protocol": dict(old, ref="/elsewhere/ref-stats.npz")}))
    check_folder(tmp_path, PROTOCOL)  # keys added since, and the moved ref path, do not count
    assert json.loads((tmp_path / "protocol.json").read_text()) == PROTOCOL
    (tmp_path / "protocol.json").unlink()
    with pytest.raises(BdenseError, match="data 'digits' -> 'mnist'"):
        check_folder(tmp_path, dict(PROTOCOL, data="mnist"))


# -- class 14: every loader through the damaged-artefact cases -----------------------------------------------------
def _model_file(art, d):
    from bdense.models.checkpoint import load_model
    p = d / "m.safetensors"
    shutil.copyfile(art["teacher"], p)
    return p, p, lambda: load_model(p)


def _run_dir(art, d):
    from bdense.models.checkpoint import load_model
    shutil.copyfile(art["teacher"], d / "model.safetensors")
    return d, d / "model.safetensors", lambda: load_model(d)


def _diffusers_export(art, d):
    from bdense.models.checkpoint import load_model
    from bdense.models.export import export_model
    export_model(art["student"], d / "exp", "diffusers")
    return d / "exp", d / "exp" / "unet" / "diffusion_pytorch_model.safetensors", lambda: load_model(d / "exp")


def _diffusers_teacher(art, d):
    from bdense.models.checkpoint import load_model
    art["vp"].net.save_pretrained(str(d / "unet"), safe_serialization=True)
    (d / "scheduler").mkdir()
    (d / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
         "prediction_type": "epsilon"}))
    return d, d / "unet" / "diffusion_pytorch_model.safetensors", lambda: load_model(d)


def _checkpoint(art, d):
    from bdense.train.rundir import RunDir
    run = RunDir(d / "run", {})
    p = run.save_state(1, {"w": torch.ones(3)}, {"step": 1})
    return p, p, lambda: RunDir(d / "run", {}, resume=True).load_state()


def _snapshot(art, d):
    from bdense.models.checkpoint import load_snapshot
    from bdense.train.rundir import RunDir
    p = RunDir(d / "run", {}).save_snapshot(1, art["t"].state_dict())
    return p, p, lambda: load_snapshot(copy.deepcopy(art["t"]), p, "delete it")


def _cached_images(art, d):
    from bdense.hosts.common import cached_images
    p = d / "refs.safetensors"
    cached_images(p, lambda: torch.zeros(2, 1, 8, 8))
    return p, p, lambda: cached_images(p, lambda: pytest.fail("remade instead of read"))


def _cache(art, d):
    from bdense.distill.sfd.cache import TrajectoryCache, write_cache
    from bdense.distill.sfd.plan import SFDPlan
    write_cache(art["t"], "digest", SFDPlan(nfe=1, substeps=1, teacher_solver="euler"), 8, d / "c", batch=4,
                shard_size=4, progress=False)
    return d / "c", d / "c" / "shard-00001.safetensors", lambda: TrajectoryCache.open(d / "c").batch(
        list(range(8)), "cpu")


def _features(art, d):
    from bdense.metrics.features import load_extractor
    p = d / "f.safetensors"
    shutil.copyfile(art["features"], p)
    return p, p, lambda: load_extractor("domain", p)


def _stats(art, d):
    from bdense.metrics.features import load_extractor
    from bdense.metrics.fid import RunningStats, load_stats, save_stats
    ext = load_extractor("domain", art["features"])
    p = d / "s.npz"
    save_stats(p, RunningStats().update(ext(torch.rand(8, 1, 8, 8) * 2 - 1)), ext, data="digits")
    return p, p, lambda: load_stats(p)


LOADERS = {"model file": _model_file, "run directory": _run_dir, "diffusers export": _diffusers_export,
           "diffusers teacher": _diffusers_teacher, "training checkpoint": _checkpoint, "weight snapshot": _snapshot,
           "cached images": _cached_images, "trajectory cache": _cache, "feature network": _features,
           "FID statistics": _stats}


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def _nan(p: Path):
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["mu"] = arrays["mu"].copy()
        arrays["mu"][0] = np.nan
        np.savez(p, **arrays)
    else:
        poison(p)


def _foreign(p: Path):
    if p.suffix == ".npz":
        np.savez(p, images=np.zeros((2, 8, 8), np.uint8))
    else:
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(3)}, str(p))


DAMAGES = {"cut short": _truncate, "one NaN": _nan, "from another tool": _foreign}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_a_damaged_artefact_naming_it(art, tmp_path, loader, damage):
    artefact, main, load = LOADERS[loader](art, tmp_path)
    load()  # the control: the good artefact loads
    DAMAGES[damage](main)
    with pytest.raises(BdenseError) as e:
        load()
    assert str(main) in str(e.value) or str(artefact) in str(e.value), str(e.value)


def test_a_snapshot_of_another_network_is_one_line(art, tmp_path):
    """A run folder whose snapshots another architecture wrote (a K=2 student's, here) is refused by name."""
    from bdense.models.branches import widen
    from bdense.models.checkpoint import load_snapshot
    from bdense.train.rundir import RunDir
    p = RunDir(tmp_path / "run", {}).save_snapshot(1, widen(art["t"], 2).state_dict())
    with pytest.raises(BdenseError, match=r"snapshot .* does not fit this run's network \(RuntimeError: .*; "
                       r"delete it$") as e:
        load_snapshot(copy.deepcopy(art["t"]), p, "delete it")
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_a_cache_shard_copied_over_another_is_refused_on_open(art, tmp_path):
    from bdense.distill.sfd.cache import TrajectoryCache
    artefact, main, _ = _cache(art, tmp_path)
    shutil.copyfile(artefact / "shard-00000.safetensors", main)
    with pytest.raises(BdenseError, match="holds seeds from 0, not 4"):
        TrajectoryCache.open(artefact)


# -- class 15: interrupts ------------------------------------------------------------------------------------------
def test_sigterm_stops_a_compare_as_a_whole(art, tmp_path):
    """SIGTERM while the first run trains: its checkpoint is written, the command exits 143, no other run starts."""
    out = tmp_path / "cmp"
    found, done = threading.Event(), threading.Event()

    def signal_when_training():
        while not (done.is_set() or found.is_set()):
            logs = list((out / "runs").rglob("log.txt")) if (out / "runs").exists() else []
            if any("first iteration" in p.read_text() for p in logs):
                found.set()
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler is installed: it checkpoints, stops
            time.sleep(0.05)
    watcher = threading.Thread(target=signal_when_training, daemon=True)
    watcher.start()
    code, _, err = run_cli(["compare", "--method", "pd", "--teacher", str(art["vp8"]), "--features",
                            str(art["features"]), "--out", str(out), "--start-steps", "4", "--end-steps", "2",
                            "--round-iters", "100000", "--batch", "8", "--eval-seeds", "2", "--seeds", "2"])
    done.set()
    watcher.join()
    assert found.is_set() and code == 143, err[-2000:]
    assert "error: interrupted by SIGTERM: checkpoint of step" in err
    runs = [p.parent for p in (out / "runs").rglob("options.json")]
    assert len(runs) == 1 and list((runs[0] / "checkpoints").glob("state-*.safetensors"))
    assert not (out / "results.json").exists()


# -- class 16: a line cut by a kill --------------------------------------------------------------------------------
def test_a_cut_metrics_line_is_skipped_at_the_end_refused_inside_and_repaired(tmp_path):
    from bdense.studies.branches import read_branch_losses
    from bdense.train.rundir import RunDir, read_metrics
    run = RunDir(tmp_path / "run", {})
    run.metrics({"step": 1, "loss/i0/b0": 0.5})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "loss/i0/b')  # the process was killed mid-line
    assert read_metrics(run.path) == [{"step": 1, "loss/i0/b0": 0.5}]
    assert read_branch_losses(run.path) == {(0, 0): ([1], [0.5])}
    RunDir(run.path, {}).metrics({"step": 3, "loss/i0/b0": 0.25})  # a resumed run starts its row on a new line
    with pytest.raises(BdenseError, match=f"{run.path / 'metrics.jsonl'} line 2"):
        read_metrics(run.path)
