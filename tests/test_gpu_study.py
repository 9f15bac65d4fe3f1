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
    assert "-- NFE 2: rc=0" in log and "-- NFE 3: rc=0" in log  # (c3)
    assert "bdense (K=4)" in log and "## bdense compare, NFE 3" in log  # (d): the report tables
    out = tmp_path / "out"
    assert (out / "study.txt").read_text().count("bdense (K=4)") >= 2
    assert (out / "teacher-digits-fp32.safetensors").is_file()
    with np.load(out / "samples-students.npz") as z:
        keys = sorted(k for k in z.files if k != "_meta")
        assert len(keys) == 8 and "nfe2/bdense/seed1" in keys and z[keys[0]].shape == (16, 8, 8, 1)
    with np.load(out / "samples-teacher.npz") as z:
        assert z["images"].shape == (32, 8, 8, 1)
    with tarfile.open(out / "study-runs.tar.gz") as t:
        names = t.getnames()
    assert any(n.endswith("cmp-nfe2/report.md") for n in names) and not any(n.endswith(".safetensors") for n in names)
    assert any(n.endswith("teacher/options.json") for n in names)
    assert len(list(out.rglob("*"))) <= 8  # at most 8 files come back
    # the later CPU step (Inception FID in the real study) runs on these files; here with the domain reference
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_study_fid.py"), "--dir", str(out),
                        "--ref", str(work / "cmp-nfe2" / "ref-stats.npz"), "--features",
                        str(work / "features.safetensors"), "--max", "16"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| 2 | bdense |" in r.stdout and "| - | teacher (own recipe) |" in r.stdout, r.stdout
