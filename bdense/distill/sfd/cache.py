"""The teacher-trajectory cache: SFD targets depend only on teacher, solver, grid and noise seeds, so make them once.

DIR/manifest.json says exactly how the trajectories were made; DIR/shard-XXXXX.safetensors hold them in order
of seed (trajectory i from noise seed i). Shards are read lazily (streams when larger than memory), and a cache
made with another teacher, grid or solver is refused.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ...errors import BdenseError
from ...io import atomic_write_bytes, atomic_write_text
from .plan import SFDPlan, recorded_teacher
from .trajectories import teacher_trajectories

FORMAT = "bdense-trajectories"


def write_cache(teacher, teacher_digest: str, plan: SFDPlan, count: int, out: str | Path, batch: int = 128,
                shard_size: int = 4096, dtype: str = "fp32", device="cpu", progress: bool = True,
                first_seed: int = 0) -> Path:
    """Generate trajectories for noise seeds first_seed..first_seed+count-1 in shards; resumes a partly written
    cache. (compare --pool fresh gives each training seed its own pool through first_seed.)"""
    if dtype not in ("fp32", "bf16"):
        raise BdenseError(f"--dtype must be fp32 or bf16, got {dtype}")
    if shard_size % batch:
        raise BdenseError(f"--shard-size {shard_size} must be a multiple of --batch {batch}")
    if getattr(teacher, "branches", 1) != 1:
        raise BdenseError(f"the teacher has {teacher.branches} branches; trajectories come from a single-branch "
                          f"teacher (bdense export a student first)")
    out = Path(out)
    from ...io import check_out_dir
    check_out_dir("--out", out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "teacher_digest": teacher_digest, "plan": asdict(plan), "count": count,
                "batch": batch, "shard_size": shard_size, "dtype": dtype,
                "shape": [len(plan.grids()[1]), teacher.channels, teacher.resolution, teacher.resolution],
                "labels": teacher.num_classes > 0, "complete": False}
    if first_seed:
        manifest["first_seed"] = first_seed
    mpath = out / "manifest.json"
    if mpath.exists():
        from ...io import read_json_file
        old = read_json_file(mpath, f"delete {out} or choose another --out")
        if {k: v for k, v in old.items() if k != "complete"} != {k: v for k, v in manifest.items() if k != "complete"}:
            raise BdenseError(f"{out} holds a different trajectory cache; choose another --out")
    atomic_write_text(mpath, json.dumps(manifest, indent=2))
    tdtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    from tqdm import tqdm
    bar = tqdm(total=count, desc="trajectories", unit="traj", disable=not progress)  # a shard can take minutes
    for first in range(0, count, shard_size):
        path = out / f"shard-{first // shard_size:05d}.safetensors"
        n = min(shard_size, count - first)
        if path.exists():
            check_shard(path, manifest, first // shard_size, n)  # a resumed cache: the shard is this cache's
            bar.update(n)
            continue
        trajs, labels = [], []
        for b in range(first, first + n, batch):
            seeds = list(range(first_seed + b, first_seed + min(b + batch, first + n)))
            traj, lab = teacher_trajectories(teacher, plan, seeds, device)
            trajs.append(traj.to("cpu", tdtype))
            if lab is not None:
                labels.append(lab.cpu())
            bar.update(len(seeds))
        tensors = {"traj": torch.cat(trajs, 1).contiguous()}
        if labels:
            tensors["labels"] = torch.cat(labels)
        atomic_write_bytes(path, st_save(tensors, metadata={"format": FORMAT, "first": str(first)}))
    bar.close()
    manifest["complete"] = True
    atomic_write_text(mpath, json.dumps(manifest, indent=2))
    return out


MANIFEST_FIELDS = ("teacher_digest", "plan", "count", "shard_size", "shape", "labels", "dtype")


def check_shard(p: Path, manifest: dict, i: int, rows: int, tensors: dict | None = None) -> None:
    """Shard i is the one the manifest describes: its header's format and `first`, and (when read) the shape and
    dtype of its trajectories and labels. A shard copied over another, or cut, is refused, never used."""
    fix = "delete it and rerun the same bdense trajectories command to rewrite it"
    if not p.is_file():
        raise BdenseError(f"trajectory shard {p} is missing; rerun the same bdense trajectories command to write it")
    try:
        with safe_open(str(p), framework="pt") as f:
            md = f.metadata() or {}
    except Exception:
        raise BdenseError(f"trajectory shard {p} is unreadable (truncated or corrupt); {fix}") from None
    first = i * manifest["shard_size"]
    if md.get("format") != FORMAT or md.get("first") != str(first):
        raise BdenseError(f"trajectory shard {p} holds seeds from {md.get('first')}, not {first} as its name and "
                          f"the manifest say (a shard copied over another?); {fix}")
    if tensors is None:
        return
    want = [manifest["shape"][0], rows, *manifest["shape"][1:]]
    dtype = torch.float32 if manifest.get("dtype", "fp32") == "fp32" else torch.bfloat16
    traj, labels = tensors.get("traj"), tensors.get("labels")
    if traj is None or list(traj.shape) != want or traj.dtype != dtype or \
            (manifest["labels"] and (labels is None or list(labels.shape) != [rows])):
        got = None if traj is None else (list(traj.shape), str(traj.dtype))
        raise BdenseError(f"trajectory shard {p} holds {got}, the manifest says {want} {dtype}; {fix}")


class TrajectoryCache:
    """Serves cached trajectories by seed; keeps the most recently used shard in memory."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.size = manifest["count"]
        self.first_seed = manifest.get("first_seed", 0)
        self.shard_size = manifest["shard_size"]
        self._loaded: dict[int, dict] = {}
        self.keep_shards = 4  # a permuted seed order touches many shards per batch; keep a few in memory

    @classmethod
    def open(cls, path: str | Path, teacher_digest: str | None = None, plan: SFDPlan | None = None) -> "TrajectoryCache":
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.exists():
            raise BdenseError(f"{path} is not a trajectory cache (no manifest.json); write one with bdense trajectories")
        from ...io import read_json_file
        m = read_json_file(mpath, f"delete {path} and write the cache again with bdense trajectories")
        if m.get("format") != FORMAT:
            raise BdenseError(f"{mpath} is not a bdense trajectory manifest")
        lacking = [k for k in MANIFEST_FIELDS if k not in m]
        if lacking or not all(isinstance(m[k], int) and not isinstance(m[k], bool) and m[k] > 0
                              for k in ("count", "shard_size")):
            raise BdenseError(f"{mpath} lacks or garbles {', '.join(lacking) or 'count/shard_size'}; delete {path} "
                              f"and write the cache again with bdense trajectories")
        if not m.get("complete"):
            raise BdenseError(f"trajectory cache {path} is incomplete; rerun the same bdense trajectories command to finish it")
        if teacher_digest is not None and m["teacher_digest"] != teacher_digest:
            raise BdenseError(f"trajectory cache {path} was made with another teacher; make a cache for this teacher")
        if plan is not None:
            # the history rule is not compared: teacher trajectories never take an AFS step (SFD: afs=False)
            mine, theirs = asdict(plan), dict(m["plan"], **recorded_teacher(m["plan"]))
            diff = [k for k in ("nfe", "substeps", "afs", "sigma_min", "sigma_max", "rho", "teacher_solver",
                                "teacher_order_rule", "teacher_threshold") if mine[k] != theirs.get(k)]
            if diff:
                raise BdenseError(f"trajectory cache {path} was made with another grid or teacher solver "
                                  f"({', '.join(f'{k}={theirs.get(k)} (this run: {mine[k]})' for k in diff)}); "
                                  f"make a cache for these options")
        count, size = m["count"], m["shard_size"]
        for i in range(-(-count // size)):  # every shard's header now: a bad one refuses before any training
            check_shard(path / f"shard-{i:05d}.safetensors", m, i, min(size, count - i * size))
        return cls(path, m)

    def _shard(self, i: int) -> dict:
        if i not in self._loaded:
            p = self.path / f"shard-{i:05d}.safetensors"
            try:
                with safe_open(str(p), framework="pt") as f:
                    shard = {k: f.get_tensor(k) for k in f.keys()}
            except Exception:
                raise BdenseError(f"trajectory shard {p} is missing or corrupt; delete it and rerun bdense "
                                  f"trajectories to rewrite it") from None
            check_shard(p, self.manifest, i, min(self.shard_size, self.size - i * self.shard_size), shard)
            from ...models.checkpoint import check_finite
            check_finite(shard, f"trajectory shard {p}", "delete it and rerun bdense trajectories to rewrite it")
            if len(self._loaded) >= self.keep_shards:
                self._loaded.pop(next(iter(self._loaded)))  # oldest first
            self._loaded[i] = shard
        return self._loaded[i]

    def batch(self, seeds: list[int], device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(trajectory [T+1, B, C, H, W] float32 on device, labels) for these seeds, in this order.

        Seeds are grouped by shard so each shard is read once per batch, whatever order the seeds come in."""
        lo, hi = self.first_seed, self.first_seed + self.size
        if min(seeds) < lo or max(seeds) >= hi:
            raise BdenseError(f"noise seeds {min(seeds)}..{max(seeds)} are not all in the cache, which holds seeds "
                              f"{lo}..{hi - 1}; make a cache for these seeds (bdense trajectories --first-seed)")
        seeds_t = torch.tensor(seeds) - lo
        shard_of = seeds_t // self.shard_size
        shape, has_labels = self.manifest["shape"], self.manifest["labels"]
        traj = torch.empty([shape[0], len(seeds)] + shape[1:], dtype=self._shard(int(shard_of[0]))["traj"].dtype)
        labels = torch.empty(len(seeds), dtype=torch.long) if has_labels else None
        for i in shard_of.unique().tolist():
            rows = (shard_of == i).nonzero().flatten()
            sh, local = self._shard(i), seeds_t[rows] % self.shard_size
            traj[:, rows] = sh["traj"][:, local]
            if has_labels:
                labels[rows] = sh["labels"][local]
        if torch.device(device).type == "cuda":
            traj = traj.pin_memory()
        traj = traj.to(device, torch.float32, non_blocking=True)
        return traj, (labels.to(device) if labels is not None else None)
