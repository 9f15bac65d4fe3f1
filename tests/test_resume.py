"""Exact resume, crash safety and clean interrupts for train-teacher and SFD (PD has its own in test_pd.py)."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors import safe_open

from bdense.distill.sfd.run import distill_sfd
from bdense.train.teacher import train_teacher

TEACHER_KW = dict(data_spec="digits", preset="tiny", steps=6, batch=8, lr=1e-3, checkpoint_every=3, progress=False,
                  device="cpu", grid_seeds=4, log_every=1)


def _state(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _assert_same_state(a, b):
    ta, _ = _state(a)
    tb, _ = _state(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert any(k.startswith("optim/") for k in ta) and any(k.startswith("ema/") for k in ta)


def _cut_after_first_checkpoint(src, dst):
    """A copy of a run as it was when killed right after its first checkpoint."""
    shutil.copytree(src, dst)
    ckpts = sorted((dst / "checkpoints").glob("state-*.safetensors"))
    for c in ckpts[1:]:
        c.unlink()
    for f in ("model.safetensors", "samples.png"):
        (dst / f).unlink()
    return ckpts[0]


def test_teacher_resume_is_bit_exact(tmp_path):
    train_teacher(out=str(tmp_path / "straight"), **TEACHER_KW)
    _cut_after_first_checkpoint(tmp_path / "straight", tmp_path / "resumed")
    train_teacher(out=str(tmp_path / "resumed"), resume=True, **TEACHER_KW)
    final = "checkpoints/state-000000006.safetensors"
    _assert_same_state(tmp_path / "straight" / final, tmp_path / "resumed" / final)
    a, _ = _state(tmp_path / "straight" / "model.safetensors")
    b, _ = _state(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sfd_resume_is_bit_exact(tmp_path, tiny_teacher_file):
    kw = dict(nfe=2, branches=2, trajectories=32, batch=8, lr=1e-3, checkpoint_every=2, progress=False,
              device="cpu", grid_seeds=4, teacher_solver="euler", teacher_substeps=2, seed=1)
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "straight"), **kw)
    _cut_after_first_checkpoint(tmp_path / "straight", tmp_path / "resumed")
    distill_sfd(str(tiny_teacher_file), str(tmp_path / "resumed"), resume=True, **kw)
    a, _ = _state(tmp_path / "straight" / "model.safetensors")
    b, _ = _state(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


CRASHING_RUN = textwrap.dedent("""
    import os, signal, sys
    import bdense.io as bio
    mode, out = sys.argv[1], sys.argv[2]
    real_replace, calls = os.replace, {"n": 0}
    def dying_replace(src, dst):
        calls["n"] += 1
        if "state-" in str(dst) and calls["n"] > 2:
            if mode == "half":  # die half way through writing the bytes of the new checkpoint
                data = open(src, "rb").read()
                open(src, "wb").write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    bio.os.replace = dying_replace
    from bdense.train.teacher import train_teacher
    train_teacher("digits", out, preset="tiny", steps=8, batch=8, checkpoint_every=2, progress=False,
                  device="cpu", grid_seeds=4, resume=len(sys.argv) > 3)
""")


@pytest.mark.parametrize("mode", ["before-rename", "half"])
def test_sigkill_while_writing_a_checkpoint_then_resume(tmp_path, mode):
    script = tmp_path / "run.py"
    script.write_text(CRASHING_RUN)
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, str(script), mode, str(out)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ckpts = sorted((out / "checkpoints").glob("state-*.safetensors"))
    assert ckpts, "the checkpoint before the crash must survive"
    _state(ckpts[-1])  # readable
    train_teacher("digits", str(out), preset="tiny", steps=8, batch=8, checkpoint_every=2, progress=False,
                  device="cpu", grid_seeds=4, resume=True)
    assert (out / "model.safetensors").exists()
    assert "resumed at step" in (out / "log.txt").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_a_checkpoint_and_exits_128_plus_its_number(tmp_path, sig):
    """Ctrl-C or SIGTERM: the checkpoint is written, no model, and the exit code says so (130/143, never 0)."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bdense.cli", "train-teacher", "--data", "digits", "--preset", "tiny",
           "--steps", "100000", "--batch", "8", "--out", str(out), "--device", "cpu", "--checkpoint-every", "100000"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.5)
    p.send_signal(sig)
    output, _ = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, output[-2000:]
    assert f"error: interrupted by {signal.Signals(sig).name}: checkpoint of step" in output
    ckpts = sorted((out / "checkpoints").glob("state-*.safetensors"))
    assert len(ckpts) == 1 and "interrupted at step" in (out / "log.txt").read_text()
    assert not (out / "model.safetensors").exists()
