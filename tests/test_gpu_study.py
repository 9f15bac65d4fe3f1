"""The GPU study script's CPU dry run: every part runs (tiny sizes, same code paths) and leaves its files in $OUT."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_study_dry_run(tmp_path):
    env = dict(os.environ, BDENSE_GPU_DRYRUN="1", OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"),
               PY=sys.executable, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               BUDGET_S="3000", LIMIT_SCALE="6")  # part limits sized for a GPU; a shared CPU needs slack
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_study.sh")], env=env, capture_output=True, text=True,
                       timeout=1800)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "SKIPPED" not in log and "TIMED OUT" not in log, log[-3000:]
    parts = [ln for ln in log.splitlines() if ln.startswith("== ") and ": rc=" in ln]
    assert len(parts) == 7 and all(": rc=0 " in ln for ln in parts), "\n".join(parts)  # p, a, b, b1, c1, c2, c4
    assert "train-teacher loop vs bare step" in log and "### profile: digits" in log  # (p)
    assert "ALL AGREE" in log  # (a)
    assert log.count("min for 200000 traj") == 2 and "compile both" in log  # (b), (b1)
    for nfe in (2, 3):  # (c3): the pre-registered GPU cell's commands, one seed shard per NFE, checked by compare
        line = next(ln for ln in log.splitlines() if ln.startswith(f"-- NFE {nfe}: "))
        assert line.endswith("rc=0") and f"sfd-28-gpu-nfe{nfe}-seeds0 --nfe {nfe} --teacher mnist-short" in line
        assert "--seeds 5 --trajectories 32000 --batch 128" in line and "--seed-block 1 --pool fresh" in line
        assert "--only-seeds 0" in line and "bdense:4:end:0.6:uniform:targets=anchored-log" in line
    c3 = (tmp_path / "work" / "c3-nfe2.log").read_text()
    assert "cp benchmarks/confirm-teachers/sfd-28-gpu-features.safetensors" in c3 and "runs: 2" in c3
    assert "0 finished seed shard(s)" in log  # a dry run trains nothing
    out = tmp_path / "out"
    assert (out / "teacher-digits-fp32.safetensors").is_file() and not (out / "confirm-results.tar.gz").exists()
    with np.load(out / "samples-teacher.npz") as z:
        assert z["images"].shape == (32, 8, 8, 1)
    with tarfile.open(out / "study-runs.tar.gz") as t:
        names = t.getnames()
    assert any(n.endswith("c3-nfe3.log") for n in names) and not any(n.endswith(".safetensors") for n in names)
    assert any(n.endswith("teacher/options.json") for n in names)
    assert len(list(out.rglob("*"))) <= 8  # at most 8 files come back
    # the later CPU step (Inception FID in the real study) runs on these files; here with a domain reference
    work = tmp_path / "work"
    bd = Path(sys.executable).parent / "bdense"
    r = subprocess.run([str(bd), "fid", "ref", "--data", "digits", "--extractor", "domain", "--features",
                        str(work / "features.safetensors"), "--out", str(work / "ref.npz"), "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_study_fid.py"), "--dir", str(out),
                        "--ref", str(work / "ref.npz"), "--features", str(work / "features.safetensors"),
                        "--max", "16"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| - | teacher (own recipe) |" in r.stdout, r.stdout
