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
from ..io import atomic_write_bytes, lock_dir, parse_json, read_json_file

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


def check_run_state(path: Path, options: dict, resume: bool) -> None:
    """The one rule of what a trainer may do with the directory it is given, checked under its lock.

    Without --resume: an empty (or new) directory, or one whose run never wrote a checkpoint nor a model and has the
    same options (a run killed at its start, started again). With --resume: a run with a checkpoint, same options.
    A directory with a model or checkpoints but no options.json is not a run bdense can vouch for: refused."""
    opt_file = path / "options.json"
    has_weights = (path / "model.safetensors").exists() or bool(list((path / "checkpoints").glob("*"))
                                                                 if (path / "checkpoints").is_dir() else [])
    if not opt_file.exists():
        if has_weights or (not resume and any(p.name != "log.txt" for p in path.iterdir())):
            raise BdenseError(f"{path} holds files but no options.json (not a run bdense can continue or replace); "
                              f"choose another --out")
        return
    old = read_json_file(opt_file, f"delete {opt_file} or choose another --out")
    if not resume and has_weights:
        raise BdenseError(f"{path} already holds a run; pass --resume to continue it or choose another --out")
    diff = changed_options(old, options)
    if diff:
        what = "--resume with options" if resume else f"{path} holds a run started with options"
        raise BdenseError(f"{what} that differ from the run's ({', '.join(diff)}); use the original options or a "
                          f"new --out")


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
        lock_dir(self.path)
        check_run_state(self.path, options, resume)
        metrics = self.path / "metrics.jsonl"
        if metrics.exists() and metrics.stat().st_size:  # a line cut by a kill: the next row starts a line of its own
            with open(metrics, "rb+") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")
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


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl. A cut last line (the run was killed while appending it) is left out;
    any other unreadable line is refused in one line naming the file."""
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BdenseError(f"cannot read {path} ({type(e).__name__}); delete it (only plots use it)") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            if i == len(lines) - 1:
                break
            raise BdenseError(f"{path} line {i + 1} is not a JSON object; delete that line (or the file: only plots "
                              f"use it)")
        rows.append(row)
    return rows


def list_snapshots(run: str | Path) -> dict[int, Path]:
    """{step: path} of the weight snapshots a run kept (TrainConfig.snapshot_steps)."""
    d = Path(run) / "snapshots"
    return {int(p.stem.split("-")[1]): p for p in sorted(d.glob("weights-*.safetensors"))} if d.exists() else {}
