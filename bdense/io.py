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


def check_out_dir(flag: str, out: str | os.PathLike, inputs=()) -> None:
    """A directory output (run, cache, report): not an existing file, not an input, not inside a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BdenseError(f"{flag} {out} is an existing file, not a directory; choose a directory path")
    for p in (Path(q) for q in inputs if q):
        if _same(out, p) or _same(out / "model.safetensors", p):
            raise BdenseError(f"{flag} {out} holds this command's input {p}, which the run would overwrite; "
                              f"choose another {flag}")
    parent = next((q for q in out.resolve().parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise BdenseError(f"cannot write to {out}: {parent} is a file, not a directory; choose another {flag}")


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
