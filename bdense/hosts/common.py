"""What every host needs from a study directory: JSON read back safely, cached images, reuse of finished runs."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..errors import BdenseError
from ..train.rundir import changed_options


def read_json(path: Path) -> dict:
    from ..io import read_json_file
    return read_json_file(path, f"delete {path} so that it is made again")


def cached_images(path: Path, make) -> torch.Tensor:
    """images saved at path, made once by make() -> [N, C, H, W] (reference images of the evaluation seeds)."""
    from safetensors.torch import save as st_save

    from ..io import atomic_write_bytes
    from ..models.checkpoint import load_tensors
    if path.exists():
        images = load_tensors(path, "cached images", "delete it so that it is made again").get("images")
        if images is None or images.dim() != 4:
            raise BdenseError(f"cached images {path} hold no [N, C, H, W] 'images'; delete it so that it is made again")
        return images
    images = make()
    atomic_write_bytes(path, st_save({"images": images.contiguous()}))
    return images


def check_reusable(d: Path, options: dict, missing: dict | None = None, move_stale: bool = False) -> bool:
    """A run is reused (or resumed) only if it was trained with the options this comparison asks for: True.

    Without this, changing --trajectories, --lr or a setting's weights but keeping --out would silently report
    the old runs under the new settings. A run made with other options stops the study, or with move_stale is
    renamed to NAME.stale-TIME (nothing is deleted; one line says so) and False tells the caller to train anew.
    """
    # the cache itself is checked against teacher and plan, so its path may differ; with K = 1 every target mode
    # is the same computation (tested bit for bit), so a baseline made under another default mode is still valid
    old = dict(missing or {}, **read_json(d / "options.json"))  # missing: values of options older runs lack
    free = {"trajectory_cache"} | ({"branch_targets"} if old.get("branches") == options.get("branches") == 1 else set())
    diff = changed_options(old, options, free=free)
    if diff and move_stale:
        set_aside(d, f"made with other options ({', '.join(diff)})")
        return False
    if diff:
        raise BdenseError(f"{d} holds a finished run made with other options ({', '.join(diff)}); "
                          f"use another --out or a new setting name, or delete that run directory")
    return True


def set_aside(d: Path, why: str) -> Path:
    """Rename d to NAME.stale-TIME beside it (never delete a run) and say so in one line."""
    stamp, n = time.strftime('%Y%m%d-%H%M%S'), 1
    aside = d.with_name(f"{d.name}.stale-{stamp}")
    while aside.exists():  # moved aside twice within a second
        n += 1
        aside = d.with_name(f"{d.name}.stale-{stamp}-{n}")
    d.rename(aside)
    print(f"moved aside {d} -> {aside.name}: {why}", flush=True)
    return aside


def snapshot_list(d: Path, lo: int = 0, hi: int | None = None) -> list[tuple[str, int, Path]]:
    """[(evals.json key, step - lo, file)] of the run's snapshots at steps in (lo, hi]."""
    from ..train.rundir import list_snapshots
    return [(str(step), step - lo, p) for step, p in sorted(list_snapshots(d).items())
            if step > lo and (hi is None or step <= hi)]
