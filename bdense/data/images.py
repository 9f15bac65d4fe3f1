"""Image output without torchvision: [-1,1] tensors to uint8, PNG grids and npz sample files over pillow/numpy."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bdense.errors import BdenseError
from bdense.io import atomic_dir, atomic_path


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """[-1,1] images ([N,C,H,W] or [C,H,W], torch or numpy) -> uint8 numpy NHWC via round((x+1)*127.5), clipped.

    NaNs become 0 (black) rather than an error: this is for looking at samples, which may have diverged.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise BdenseError(f"to_uint8 expects images shaped [N,C,H,W] or [C,H,W], got shape {tuple(x.shape)}")
    x = np.nan_to_num(x, nan=-1.0, posinf=1.0, neginf=-1.0)
    out = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def _as_nhwc_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 input is taken as NHWC (or NHW); anything else as [-1,1] floats NCHW."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        arr = images
    elif isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        arr = images.cpu().numpy()
    else:
        return to_uint8(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise BdenseError(f"uint8 images must be shaped [N,H,W,C] or [N,H,W], got {tuple(arr.shape)}")
    return arr


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = 2,
              min_size: int = 32) -> np.ndarray:
    """Tile images into one uint8 array [H,W] (gray) or [H,W,3] (RGB), black padding between tiles.

    nrow = images per row (default: ceil(sqrt(N))). Images smaller than `min_size` pixels are
    upscaled by an integer factor with nearest-neighbour so that 8x8 samples stay visible.
    """
    arr = _as_nhwc_uint8(images)
    n, h, w, c = arr.shape
    if n == 0:
        raise BdenseError("save_grid got no images; pass at least one")
    if c not in (1, 3):
        raise BdenseError(f"save_grid supports 1 (gray) or 3 (RGB) channels, got {c}")
    scale = max(1, math.ceil(min_size / max(1, min(h, w))))
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    nrow = max(1, min(n, nrow or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = arr[i]
    return grid[..., 0] if c == 1 else grid


def save_grid(images: torch.Tensor | np.ndarray, path: str | os.PathLike, nrow: int | None = None,
              padding: int = 2, min_size: int = 32) -> Path:
    """Write a PNG grid of images ([-1,1] floats NCHW, or uint8 NHWC) atomically; returns the path."""
    grid = make_grid(images, nrow=nrow, padding=padding, min_size=min_size)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


def label_rows(grid: np.ndarray, labels: list[str], rows: int, padding: int = 2) -> np.ndarray:
    """Prefix a grid of `rows` equal rows with a column holding each row's name (PIL's default font, white)."""
    from PIL import ImageDraw, ImageFont
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    width = max(probe.textbbox((0, 0), t, font=font)[2] for t in labels) + 2 * padding + 2
    img = Image.fromarray(grid)
    canvas = Image.new(img.mode, (img.width + width, img.height), 0)
    canvas.paste(img, (width, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = (img.height - padding) / rows
    white = 255 if img.mode == "L" else (255, 255, 255)
    for r, text in enumerate(labels[:rows]):
        _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
        y = padding + r * row_h + (row_h - padding - (bottom - top)) / 2 - top
        draw.text((padding + 1, y), text, fill=white, font=font)
    return np.asarray(canvas)


def save_labeled_grid(images, path: str | os.PathLike, row_labels: list[str], nrow: int) -> Path:
    """A PNG grid (nrow images per row) whose rows are named in the image itself, left of each row."""
    grid = make_grid(images, nrow=nrow)
    rows = -(-len(_as_nhwc_uint8(images)) // nrow)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(label_rows(grid, row_labels, rows)).save(tmp, format="PNG")
    return path


def save_npz(images_uint8: np.ndarray | torch.Tensor, path: str | os.PathLike, **extra) -> Path:
    """Write uint8 images (plus any extra arrays, e.g. labels=...) to a compressed .npz atomically."""
    if isinstance(images_uint8, torch.Tensor):
        images_uint8 = images_uint8.cpu().numpy()
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.dtype != np.uint8:
        raise BdenseError(f"save_npz expects uint8 images, got {images_uint8.dtype}; convert with to_uint8() first")
    arrays = {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in extra.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
            np.savez_compressed(fh, images=images_uint8, **arrays)
    return path


def save_pngs(images_uint8: np.ndarray, seeds: list[int], outdir: str | os.PathLike) -> Path:
    """One PNG per image, named by its seed (000042.png), gray or RGB: the folder layout EDM's fid.py,
    torch-fidelity and `bdense fid calc --samples DIR` read. The folder is written under a temporary name and
    renamed (bdense.io.atomic_dir), so an interrupted run leaves no half-written folder."""
    arr = _as_nhwc_uint8(images_uint8)
    if len(arr) != len(seeds):
        raise BdenseError(f"save_pngs got {len(arr)} images for {len(seeds)} seeds")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise BdenseError(f"--outdir {outdir} is a file; pass a directory")
    with atomic_dir(outdir) as tmp:  # the folder is written whole: no old PNG beside the new, none left on failure
        for im, seed in zip(arr, seeds):
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(tmp / f"{int(seed):06d}.png", format="PNG")
    return outdir


def save_npz_adm(images_uint8: np.ndarray, path: str | os.PathLike, labels=None) -> Path:
    """ADM's sample layout (guided-diffusion's evaluator reads it): arr_0 = uint8 NHWC RGB (gray repeated to three
    channels, as its Inception needs), arr_1 = labels for class-conditional models. Uncompressed, as ADM writes."""
    arr = _as_nhwc_uint8(images_uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arrays = {"arr_0": np.ascontiguousarray(arr)}
    if labels is not None:
        arrays["arr_1"] = np.asarray(labels, dtype=np.int64)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path
