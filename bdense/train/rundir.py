"""A run directory owns options.json, log.txt, metrics.jsonl and checkpoints/, so every trainer resumes alike.

Training state is saved as safetensors (tensors) + JSON in its header (everything else): no pickle anywhere.
Writes are atomic; the newest `keep` checkpoints are kept.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ..errors import BdenseError
from ..io import atomic_write_bytes, parse_json, read_json_file

NAN_FIX = "the run diverged: lower --lr or use --precision fp32 (earlier checkpoints are kept)"


def _check_finite(tensors: dict, path: Path) -> None:
    from ..models.checkpoint import check_finite
    check_finite({k: v for k, v in tensors.items() if not k.startswith("rng/")}, f"not writing {path}", NAN_FIX)

# options that may differ on resume without changing what the run computes
RESUME_FREE = {"resume", "progress", "log_every", "checkpoint_every", "keep", "device", "out", "steps"}


# options added after runs were made: a run whose options.json lacks one was made with this value
ADDED_OPTIONS = {"branch_heads": "shared"}


def changed_options(old: dict, new: dict, free: set = frozenset()) -> list[str]:
    """Options that change what a run computes and differ between two option sets (sorted); a key of
    ADDED_OPTIONS missing on one side means its default there."""
    if old.get("command") == new.get("command") == "distill" and old.get("method") == new.get("method") == "sfd":
        old, new = {**ADDED_OPTIONS, **old}, {**ADDED_OPTIONS, **new}
    return sorted(k for k in set(old) | set(new) if k not in RESUME_FREE | free and old.get(k) != new.get(k))


class RunDir:
    def __init__(self, path: str | Path, options: dict, resume: bool = False, keep: int = 2):
        self.path = Path(path)
        self.keep = keep
        self.ckpt_dir = self.path / "checkpoints"
        opt_file = self.path / "options.json"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise BdenseError(f"cannot write to run directory {self.path} ({e.strerror}); choose a writable --out") from None
        if opt_file.exists():
            old = read_json_file(opt_file, f"delete {opt_file} or choose another --out")
            if not resume and self.latest() is not None:
                raise BdenseError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
            if resume:
                diff = changed_options(old, options)
                if diff:
                    raise BdenseError(f"--resume with options that differ from the run's ({', '.join(diff)}); "
                                      f"use the original options or a new --out")
        self.options = options
        atomic_write_bytes(opt_file, json.dumps(options, indent=2, sort_keys=True, default=str).encode())

    # -- log and metrics -------------------------------------------------
    def log(self, msg: str, echo: bool = True) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        with open(self.path / "log.txt", "a") as f:
            f.write(line + "\n")
        if echo:
            from tqdm import tqdm
            tqdm.write(line)

    def metrics(self, row: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row, default=float) + "\n")

    # -- checkpoints -------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("state-*.safetensors")) if self.ckpt_dir.exists() else []

    def latest(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def save_state(self, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
        path = self.ckpt_dir / f"state-{step:09d}.safetensors"
        _check_finite(tensors, path)
        data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                       metadata={"format": "bdense-train-state", "meta": json.dumps(meta)})
        atomic_write_bytes(path, data)
        for old in self.checkpoints()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def save_snapshot(self, step: int, weights: dict[str, torch.Tensor]) -> Path:
        path = self.path / "snapshots" / f"weights-{step:09d}.safetensors"
        _check_finite(weights, path)
        atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                                         metadata={"format": "bdense-snapshot", "step": str(step)}))
        return path

    def snapshots(self) -> dict[int, Path]:
        return list_snapshots(self.path)

    def load_state(self, path: Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        path = path or self.latest()
        if path is None:
            raise BdenseError(f"--resume: no checkpoint in {self.ckpt_dir}; start without --resume")
        try:
            with safe_open(str(path), framework="pt") as f:
                md = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception:
            raise BdenseError(f"checkpoint {path} is unreadable (truncated or corrupt); delete it to resume "
                              f"from the one before") from None
        if md.get("format") != "bdense-train-state":
            raise BdenseError(f"{path} is not a bdense training checkpoint; remove it from {self.ckpt_dir}")
        from ..models.checkpoint import check_finite
        check_finite({k: v for k, v in tensors.items() if not k.startswith("rng/")}, f"checkpoint {path}",
                     "delete it to resume from the checkpoint before")
        return tensors, parse_json(md.get("meta", ""), f"the header of {path}",
                                   "delete it to resume from the checkpoint before")


def list_snapshots(run: str | Path) -> dict[int, Path]:
    """{step: path} of the weight snapshots a run kept (TrainConfig.snapshot_steps)."""
    d = Path(run) / "snapshots"
    return {int(p.stem.split("-")[1]): p for p in sorted(d.glob("weights-*.safetensors"))} if d.exists() else {}
