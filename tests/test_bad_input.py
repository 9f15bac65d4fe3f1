"""Bad input is refused with one line naming the problem and the fix, exit code 2, and no file touched.

Every case (tests/bad_input_cases.py) runs the real `bdense` entry point in-process. Run `python
tests/test_bad_input.py > docs/bad-input.md` to regenerate the docs table from them (the messages shown are the
ones the test sees).
"""
from __future__ import annotations

import errno
import hashlib
import io
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_cases import CASES, CLASSES  # noqa: E402
from bad_input_files import MARKER, make_files, write_cifar  # noqa: E402


def _case(c):
    cls, what, cmd, expect, *rest = c
    code = rest[0] if rest else 2
    allowed = rest[1] if len(rest) > 1 else ()
    return cls, what, cmd, expect, code, allowed


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run the bdense entry point in this process: (exit code, stdout, stderr)."""
    from bdense.cli import main
    old = sys.argv, sys.stdout, sys.stderr
    out, err = io.StringIO(), io.StringIO()
    sys.argv, sys.stdout, sys.stderr = ["bdense", *argv], out, err
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a traceback is what the test looks for
        import traceback
        traceback.print_exc(file=err)
        code = -1
    finally:
        sys.argv, sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _argv(cmd: str, files: dict) -> list[str]:
    return cmd.format(**files).split()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    return make_files(root)


def test_cases_cover_every_command_and_class():
    from typer.main import get_command

    from bdense.cli import app
    top = get_command(app)
    names = []
    for name, cmd in top.commands.items():
        names += [f"{name} {sub}" for sub in cmd.commands] if hasattr(cmd, "commands") else [name]
    used = {c[2].split()[0] + (" " + c[2].split()[1] if c[2].split()[0] in ("fid", "data", "teachers") else "") for c in CASES}
    missing = [n for n in names if n not in used and n != "data fetch"]
    assert not missing, f"commands without a bad-input case: {missing}"
    assert len(CASES) >= 80 and {c[0] for c in CASES} >= set(range(1, 10))
    docs = (Path(__file__).parents[1] / "docs" / "bad-input.md").read_text()
    stale = [c[1] for c in CASES if f"| {c[1]} |" not in docs]
    assert not stale, f"regenerate docs/bad-input.md (python tests/test_bad_input.py > docs/bad-input.md): {stale}"


def test_every_case(files):
    """Each case: exit code 2 (0 where valid), one line 'error: ...' with the expected text, no traceback, no
    existing file changed, no output left behind by a refused command."""
    root = Path(files["root"])
    failures = []
    for c in CASES:
        cls, what, cmd, expect, code, allowed = _case(c)
        before = _tree(root)
        saved = {a: (root / a).read_bytes() for a in allowed if (root / a).exists()}
        got, out, err = run_cli(_argv(cmd, files))
        after = _tree(root)
        lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("sampling", "step "))]
        problems = []
        if got != code:
            problems.append(f"exit {got}, expected {code}")
        if "Traceback" in err + out:
            problems.append("traceback")
        if code == 2 and not (len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0]):
            problems.append(f"message {lines!r} lacks {expect!r}")
        changed = [k for k, v in before.items() if after.get(k) != v and k not in allowed]
        new = [k for k in set(after) - set(before) if k not in allowed]
        if changed or new:
            problems.append(f"changed {changed}, new {new}")
        if problems:
            failures.append(f"[{what}] bdense {cmd}: {'; '.join(problems)}\n{err[-2000:]}")
        for k in set(after) - set(before):  # leave the folder as it was for the next case
            (root / k).unlink()
        for a, data in saved.items():
            (root / a).write_bytes(data)
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()) and str(d.relative_to(root)) not in ("run/checkpoints", "badrun/checkpoints",
                                                                           "cache-bad"):
                d.rmdir()
    assert not failures, "\n".join(failures)
    assert not any(root.rglob(MARKER))


def test_a_planted_pickle_runs_no_code(tmp_path):
    """Plain pickle.load of the planted batch would create the marker; bdense refuses the batch and it never does."""
    import pickle

    from bdense.data.datasets import load_dataset
    from bdense.errors import BdenseError
    evil = write_cifar(tmp_path / "evil", planted=True)
    with pytest.raises(BdenseError, match="refused global io.open"):
        load_dataset(f"cifar10:{evil}")
    assert not (evil / MARKER).exists()
    with open(evil / "data_batch_1", "rb") as fh:  # the control: the file really is hostile
        pickle.load(fh, encoding="bytes")
    assert (evil / MARKER).exists()


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


def docs_table() -> str:
    import tempfile
    lines = ["| class | bad input | command | exit | what bdense shows |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "DIR"
        root.mkdir()
        files = make_files(root)
        names = {k: "DIR/" + str(Path(v).relative_to(root)) for k, v in files.items() if k != "root"}
        for c in CASES:
            cls, what, cmd, expect, code, allowed = _case(c)
            saved = {a: (root / a).read_bytes() for a in allowed if (root / a).exists()}
            got, out, err = run_cli(_argv(cmd, files))
            for a, data in saved.items():
                (root / a).write_bytes(data)
            for a in allowed:
                if a not in saved:
                    (root / a).unlink(missing_ok=True)
            shown = [x for x in (err if got else out).splitlines() if x.strip()]
            shown = (shown[-1] if got == 0 and shown else (shown[0] if shown else "")).replace(str(root), "DIR")
            shown = shown.replace(d, "").replace("|", "\\|")
            shown_cmd = cmd.format(root="DIR", **names).replace("|", "\\|")
            lines.append(f"| {cls} {CLASSES[cls]} | {what} | `bdense {shown_cmd}` | {got} | {shown} |")
        shutil.rmtree(root, ignore_errors=True)
    return "\n".join(lines)


if __name__ == "__main__":  # print docs/bad-input.md
    print(Path(__file__).with_name("bad_input_header.md").read_text().rstrip() + "\n")
    print(docs_table())
