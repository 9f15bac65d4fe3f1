"""Two CPU processes (gloo, through accelerate's launcher) give the same loss curve as one, at equal global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc, args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "bdense.cli", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-3000:]


def _losses(run, key="loss"):
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("command", ["train-teacher", "distill"])
def test_two_processes_match_one(tmp_path, tiny_teacher_file, command):
    if command == "train-teacher":
        base = ["train-teacher", "--data", "digits", "--preset", "tiny", "--steps", "4", "--batch", "16",
                "--checkpoint-every", "100", "--log-every", "1"]
    else:
        base = ["distill", "--teacher", str(tiny_teacher_file), "--nfe", "2", "--branches", "2",
                "--trajectories", "64", "--batch", "16", "--teacher-solver", "euler", "--lr", "1e-3", "--log-every", "1"]
    _launch(1, base + ["--out", str(tmp_path / "one")], tmp_path)
    _launch(2, base + ["--out", str(tmp_path / "two")], tmp_path)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) > 0
    assert one == pytest.approx(two, rel=1e-4, abs=1e-5)


def test_sampling_sharded_over_two_processes_equals_one(tmp_path, tiny_teacher_file):
    import numpy as np
    base = ["sample", str(tiny_teacher_file), "--seeds", "0-9", "--nfe", "5", "--batch", "4"]
    _launch(1, base + ["--npz", str(tmp_path / "one.npz")], tmp_path)
    _launch(2, base + ["--npz", str(tmp_path / "two.npz")], tmp_path)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert np.array_equal(one["seeds"], two["seeds"]) and np.array_equal(one["images"], two["images"])
