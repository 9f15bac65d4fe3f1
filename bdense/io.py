"""Atomic file writes, so an interrupted run never leaves a half-written checkpoint, cache or image."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import BdenseError


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; silently skipped where directories cannot be opened (e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    If the body raises, the temporary file is deleted and any existing `path` is left untouched.
    The temp name keeps the target's suffix (override with `suffix`) so writers that pick a format
    from the extension (pillow, numpy) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would otherwise become the final file's mode
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_path: the writer did not create {tmp}")
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise BdenseError(f"disk full while writing {path}; free space or choose another output "
                              f"directory (the previous file, if any, is untouched)") from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside `path`; on success it replaces `path` (whose old contents go only then:
    the caller has checked --overwrite with check_out_dir). If the body raises, the temporary folder is deleted and
    `path` is untouched; a full disk is one line naming `path`."""
    import shutil
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    old = None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "x").exists() and not path.exists():  # put the previous folder back
            os.replace(old / "x", path)
            old.rmdir()
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise BdenseError(f"disk full while writing {path}; free space or choose another output directory "
                              f"(nothing was left behind, the previous folder, if any, is untouched)") from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, os.replace)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def file_digest(path: str | os.PathLike) -> str:
    """First 16 hex digits of a file's sha256 (a run directory: of its model.safetensors; another directory, e.g.
    a diffusers model, is named by its path)."""
    p = Path(path)
    if p.is_dir() and (p / "model.safetensors").is_file() and not (p / "model_index.json").exists():
        p = p / "model.safetensors"
    if p.is_dir():
        return "dir:" + str(p.resolve())
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def files_digest(root: str | os.PathLike, files) -> str:
    """First 16 hex digits of a sha256 over `files` (paths under `root`), each by its relative name and bytes:
    a folder of samples gets a digest that changes when any image, or which images are there, changes."""
    h = hashlib.sha256()
    for f in sorted(Path(f) for f in files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def parse_json(text: str | bytes, where: str, fix: str) -> dict:
    """A JSON object from a file or header, or one line saying which file is bad and what to do."""
    import json
    try:
        doc = json.loads(text)
    except (ValueError, TypeError, RecursionError) as e:
        raise BdenseError(f"{where} holds invalid JSON ({type(e).__name__}); {fix}") from None
    if not isinstance(doc, dict):
        raise BdenseError(f"{where} holds JSON {type(doc).__name__}, not an object; {fix}")
    return doc


def read_json_file(path: str | os.PathLike, fix: str) -> dict:
    """parse_json of a file's text ({} when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BdenseError(f"cannot read {path} ({type(e).__name__}); {fix}") from None
    return parse_json(text, str(path), fix)


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(outputs: dict, inputs=(), overwrite: bool = False) -> None:
    """Refuse, before any work, an output that is one of the command's inputs (or inside an input directory),
    two outputs at one path, a directory where a file goes, and an existing file unless `overwrite`.

    outputs: {flag: path or None}; inputs: paths (None skipped). Writes themselves are atomic (atomic_path).
    """
    ins = [Path(p) for p in inputs if p]
    seen: dict[Path, str] = {}
    for flag, out in outputs.items():
        if out is None:
            continue
        out = Path(out)
        for p in ins:
            if _same(out, p) or (p.is_dir() and out.resolve().is_relative_to(p.resolve())):
                raise BdenseError(f"{flag} {out} is one of this command's inputs ({p}); write the output elsewhere")
        key = out.resolve()
        if key in seen:
            raise BdenseError(f"{flag} and {seen[key]} name the same file {out}; give each output its own path")
        seen[key] = flag
        if out.is_dir():
            raise BdenseError(f"{flag} {out} is a directory; give a file path")
        if out.exists() and not out.is_file():  # a device, FIFO or socket: never replaced by a file
            raise BdenseError(f"{flag} {out} is not a regular file; give a file path")
        parent = next((q for q in out.resolve().parents if q.exists()), None)
        if parent is not None and not parent.is_dir():
            raise BdenseError(f"{flag} {out}: {parent} is a file, not a directory; choose another path")
        if out.exists() and not overwrite:
            raise BdenseError(f"{flag} {out} already exists; pass --overwrite to replace it or choose another path")


# a directory holding one of these was made by bdense (a run, cache, comparison or study): commands reuse or refuse it
# by their own rules; any other non-empty directory is the user's and is never written into
BDENSE_DIR_MARKERS = ("options.json", "manifest.json", "protocol.json", "results.json", "optuna.db", "runs", "trials",
                      "features.safetensors", "ref-stats.npz", "final", "seed-block.json")


def is_bdense_dir(path: Path) -> bool:
    return any((path / m).exists() for m in BDENSE_DIR_MARKERS) or any(path.glob("nfe[0-9]*/manifest.json"))


def check_out_dir(flag: str, out: str | os.PathLike, inputs=(), new: bool = False, overwrite: bool = False) -> None:
    """The one guard of a directory output (run, cache, study, PNG folder, export folder), before any work.

    Refused: an existing file; a directory that is or holds one of the inputs, or lies inside an input directory
    (a run inside its data set); a non-empty directory that bdense did not make; with `new` (a folder written whole:
    PNGs, a diffusers export), any non-empty directory unless `overwrite`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BdenseError(f"{flag} {out} is an existing file, not a directory; choose a directory path")
    for p in (Path(q) for q in inputs if q):
        if _same(out, p) or _same(out / "model.safetensors", p) or (new and p.exists() and _inside(p, out)):
            raise BdenseError(f"{flag} {out} holds this command's input {p}, which the run would overwrite; "
                              f"choose another {flag}")
        if p.is_dir() and _inside(out, p):
            raise BdenseError(f"{flag} {out} lies inside this command's input {p}, which writing there would "
                              f"change; choose a {flag} outside it")
    parent = next((q for q in out.resolve().parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise BdenseError(f"cannot write to {out}: {parent} is a file, not a directory; choose another {flag}")
    if out.is_dir() and any(out.iterdir()):
        if new and not overwrite:
            raise BdenseError(f"{flag} {out} is not empty; pass --overwrite to replace its contents or choose a new "
                              f"directory")
        if not new and not is_bdense_dir(out):
            raise BdenseError(f"{flag} {out} holds files bdense did not write (no {BDENSE_DIR_MARKERS[0]}); choose "
                              f"a new or empty directory")


def _inside(a: Path, b: Path) -> bool:
    """a is b or lies below it (symlinks resolved)."""
    try:
        return a.resolve().is_relative_to(b.resolve())
    except OSError:
        return False


_LOCKS: dict[str, int] = {}  # resolved directory -> open fd holding its lock, for the life of the process


def lock_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """Take an exclusive lock on a directory (run, comparison, study) for the life of this process, so a second
    command on it is refused in one line instead of interleaving its files with the first one's. fcntl.flock on
    the directory itself: no lock file to leave behind, and the kernel drops the lock when the process ends."""
    import fcntl
    path = Path(path)
    key = str(path.resolve())
    if key in _LOCKS or os.environ.get("RANK", "0") != "0":  # the other processes of one `accelerate launch` run
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BdenseError(f"{flag} {path} is in use by another bdense process; wait for it to finish (or stop it) "
                          f"or choose another {flag}") from None
    _LOCKS[key] = fd


def link(target: str | os.PathLike, artefact_dir: str | os.PathLike) -> dict:
    """How an artefact names another file: absolute path, path relative to the artefact's folder, digest."""
    t = Path(target).resolve()
    return {"path": str(t), "rel": os.path.relpath(t, Path(artefact_dir).resolve()), "digest": file_digest(t)}


def resolve_link(stored: str | None, rel: str | None, digest: str | None, artefact: str | os.PathLike,
                 what: str, fix: str) -> Path:
    """Find the file an artefact names: relative to the artefact first (folders moved together), then the stored
    absolute path, then as given (older files stored the path relative to where the command ran); the file must
    have the stored digest. `fix` says how to pass the right file explicitly."""
    base = Path(artefact).resolve().parent
    candidates = [base / rel] if rel else []
    candidates += [Path(stored), base / stored] if stored else []
    found = [c for c in candidates if c.is_file() or c.is_dir()]
    for c in found:
        if digest is None or file_digest(c) == digest:
            return c
    if not candidates:
        raise BdenseError(f"{artefact} does not name its {what}; {fix}")
    if found:
        raise BdenseError(f"{artefact} names its {what} {found[0]}, but that file has changed (digest "
                          f"{file_digest(found[0])}, recorded {digest}); {fix}")
    raise BdenseError(f"{artefact} names its {what} {stored or rel}, which is not found (looked relative to "
                      f"{base} and as given); {fix}")
