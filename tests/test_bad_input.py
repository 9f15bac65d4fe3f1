"""Bad input is refused with one line naming the problem and the fix, a non-zero exit, and no file touched.

Run `python tests/test_bad_input.py` to print the table of cases and messages kept in docs/bad-input.md.
"""
from __future__ import annotations

import errno
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def _setup(root: Path) -> dict:
    """Files the cases refer to: a good teacher, a 2-branch student, broken models, broken data."""
    from safetensors.torch import save_file

    from bdense.models.branches import widen
    from bdense.models.checkpoint import save_model
    from bdense.models.factory import new_model
    torch.manual_seed(0)
    t = new_model("edm", 1, 8, preset="tiny", data="digits")
    p = {"teacher": save_model(root / "teacher.safetensors", t),
         "student": save_model(root / "student.safetensors", widen(t, 2)),
         "t16": save_model(root / "teacher16.safetensors", new_model("v", 1, 16, preset="tiny", data="mnist"))}
    raw = p["teacher"].read_bytes()
    (root / "truncated.safetensors").write_bytes(raw[: len(raw) // 3])
    save_file({"w": torch.zeros(3)}, str(root / "foreign.safetensors"))
    torch.save({"w": torch.zeros(3)}, root / "pickled.pt")
    bad = np.zeros((4, 8, 8), np.float32)
    bad[0, 0, 0] = np.nan
    np.savez(root / "nan.npz", images=bad)
    np.savez(root / "range.npz", images=np.full((4, 8, 8), 7.0, np.float32))
    (root / "a-file").write_text("x")
    (root / "run").mkdir()
    (root / "run" / "options.json").write_text(json.dumps({"command": "other"}))
    (root / "run" / "checkpoints").mkdir()
    (root / "run" / "checkpoints" / "state-000000001.safetensors").write_bytes(b"old")
    return {k: str(v) for k, v in p.items()}


# (what is wrong, command line with {root} and file keys, text the message must contain)
CASES = [
    ("truncated checkpoint", "sample {root}/truncated.safetensors --grid {root}/g.png", "truncated or corrupt"),
    ("file from another tool", "sample {root}/foreign.safetensors --grid {root}/g.png", "not a bdense model"),
    ("pickled checkpoint", "sample {root}/pickled.pt --grid {root}/g.png", "--trust-pickle"),
    ("missing checkpoint", "sample {root}/nope.safetensors --grid {root}/g.png", "does not exist"),
    ("K-branch student used as a teacher", "distill --teacher {student} --out {root}/o", "export it first"),
    ("K the grid cannot serve", "distill --teacher {teacher} --out {root}/o --branches 3", "divides --teacher-substeps"),
    ("NFE 0", "distill --teacher {teacher} --out {root}/o --nfe 0", "between 1 and 8"),
    ("negative branch weight", "distill --teacher {teacher} --out {root}/o --branches 2 --branch-weights 1,-1",
     "positive"),
    ("wrong number of weights", "distill --teacher {teacher} --out {root}/o --branches 4 --branch-weights 1,1",
     "give exactly 4"),
    ("seeds that run backwards", "sample {teacher} --seeds 5-2 --grid {root}/g.png", "runs backwards"),
    ("fp16 on a CPU", "train-teacher --data digits --preset tiny --steps 1 --out {root}/o --precision fp16 "
     "--device cpu", "needs a GPU"),
    ("PD with an EDM teacher", "distill --method pd --teacher {teacher} --out {root}/o", "VP"),
    ("PD teacher and data differ in resolution", "distill --method pd --teacher {t16} --out {root}/o --data digits",
     "expects"),
    ("data with NaNs", "train-teacher --data npz:{root}/nan.npz --preset tiny --steps 1 --out {root}/o", "NaN"),
    ("data out of range", "train-teacher --data npz:{root}/range.npz --preset tiny --steps 1 --out {root}/o",
     "[-1"),
    ("missing data file", "train-teacher --data npz:{root}/none.npz --steps 1 --out {root}/o", "does not exist"),
    ("unknown data set", "train-teacher --data cifar100 --steps 1 --out {root}/o", "digits"),
    ("run directory already holds a run", "train-teacher --data digits --preset tiny --steps 1 --out {root}/run",
     "--resume"),
    ("resume with different options", "train-teacher --data digits --preset tiny --steps 1 --out {root}/run "
     "--resume", "differ"),
    ("output directory not writable", "train-teacher --data digits --preset tiny --steps 1 --out {root}/a-file/o",
     "cannot write"),
    ("nothing to write", "sample {teacher}", "--grid"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    from bdense.cli import main
    old = sys.argv
    sys.argv = ["bdense", *argv]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err.strip()


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("what, cmd, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(tmp_path, capsys, what, cmd, expect):
    files = _setup(tmp_path)
    before = _tree(tmp_path)
    code, err = _run(cmd.format(root=tmp_path, **files).split(), capsys)
    assert code == 2, (what, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], lines[0]
    after = _tree(tmp_path)
    assert all(after.get(k) == v for k, v in before.items()), "an existing file was changed or removed"
    new = set(after) - set(before)
    assert not [n for n in new if not n.endswith(("options.json", "log.txt"))], new


def test_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    from bdense.errors import BdenseError
    from bdense.io import atomic_write_bytes
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("bdense.io._fsync_file", no_space)
    with pytest.raises(BdenseError, match="disk full"):
        atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


if __name__ == "__main__":  # print the docs table
    import tempfile

    from bdense.cli import main as _main

    class _Cap:
        def __init__(self):
            import io
            self.buf = io.StringIO()

        def readouterr(self):
            class R:
                err = self.buf.getvalue()
            self.buf = __import__("io").StringIO()
            return R

    print("| bad input | command | message (exit code 2, no existing file touched) |\n|---|---|---|")
    for what, cmd, _ in CASES:
        with tempfile.TemporaryDirectory() as d:
            files = _setup(Path(d))
            cap = _Cap()
            real = sys.stderr
            sys.stderr = cap.buf
            try:
                code, err = _run(cmd.format(root=d, **files).split(), cap)
            finally:
                sys.stderr = real
            shown = err.replace(d, "DIR").replace("|", "\\|")
            print(f"| {what} | `bdense {cmd.format(root='DIR', **{k: f'DIR/{Path(v).name}' for k, v in files.items()})}` | {shown} |")
