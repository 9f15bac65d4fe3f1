"""`pip install .` is a complete install: the wheel declares what it imports (in ranges the pinned requirements.txt
satisfies), ships the teachers, and runs from a fresh virtualenv without the source tree. Offline: the new venv sees
this test venv's packages through a path file, and the wheel is installed with --no-deps --no-index."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    src = tmp_path / "src"  # build from a copy: the source tree gets no build/ folder
    shutil.copytree(ROOT / "bdense", src / "bdense", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", tmp_path / "dist", src])
    wheel = next((tmp_path / "dist").glob("bdense-*.whl"))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "bdense" / "teachers").glob("*.safetensors"))
    assert shipped and all(f"bdense/teachers/{n}" in names for n in shipped), names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    # this venv's packages (torch, diffusers, ...) but not its editable bdense: a plain path line runs no .pth hooks
    (site / "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([*pip, "--python", py, "install", "--no-deps", "--no-index", "-q", wheel])
    # every requirement the wheel declares is met by the pinned packages: pip would install nothing more
    check = subprocess.run([*pip, "--python", py, "check"], capture_output=True, text=True).stdout
    assert not [ln for ln in check.splitlines() if ln.lower().startswith("bdense ")], check

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", XDG_DATA_HOME=str(tmp_path / "data"))
    env.pop("BDENSE_TEACHERS", None)
    env.pop("PYTHONPATH", None)
    where = _run([py, "-c", "import bdense; print(bdense.__file__)"], env=env, cwd=tmp_path)
    assert where.startswith(str(site)), where  # the installed copy, not the source tree
    bdense = venv / "bin" / "bdense"
    listed = _run([bdense, "teachers", "list"], env=env, cwd=tmp_path)
    assert all(f"{Path(n).stem}: {site}" in listed for n in shipped), listed
    out = _run([bdense, "distill", "--teacher", "fashion-mnist-tiny", "--out", tmp_path / "run", "--trajectories", "8",
                "--batch", "8", "--device", "cpu"], env=env, cwd=tmp_path)
    assert (tmp_path / "run" / "model.safetensors").is_file(), out
