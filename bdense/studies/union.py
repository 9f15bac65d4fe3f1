"""`bdense compare --report-only`: one report over every comparison run into one output folder.

Several `compare` invocations often share an --out (one per NFE, or a setting added later); each writes its results
to OUT/parts/ as well as OUT/results.json, which the last one overwrites. This merges them all, refusing results
that were not measured the same way (teacher, references, budget, seed block), and writes results.json and report.md
over the union of points and settings, with the verdicts paired on training seeds as always.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path

from ..errors import BdenseError
from ..hosts.common import read_json
from ..io import atomic_write_text
from .compare import PARTS, CompareConfig, Comparison, Setting
from .protocol import measured
from .grid import grid
from .report import write_report
from .sfdv import SFDvSetting

FREE = {"nfes", "seeds", "only_seeds", "eval_points", "out", "progress", "device", "move_stale"}  # may differ between invocations


def _ints(results: dict) -> dict:
    """JSON turned the training-seed and step keys into strings; make them the integers compare uses."""
    for entry in grid(results).values():
        entry["runs"] = {s: {int(k): dict(r, evals={int(st) if str(st).isdigit() else st: m
                                                    for st, m in r["evals"].items()}) for k, r in runs.items()}
                         for s, runs in entry["runs"].items()}
    return results


def read_results(path: Path) -> dict:
    """A results.json with the integer seed and step keys compare made it with (for verdicts over several folders)."""
    return _ints(read_json(path))


def _same(a, b, what: str, where: Path) -> None:
    if a != b:
        raise BdenseError(f"the comparisons in {where} differ in {what}; report them from separate --out folders")


def merge(parts: list[dict], where: Path) -> dict:
    """The union of several results: points, settings and training seeds; everything else must agree."""
    first = parts[0]
    union = json.loads(json.dumps(first))
    key = first["host"]["grid_key"]
    settings = {s["name"]: s for s in first["settings"]}
    for r in parts[1:]:
        for k in set(r["config"]) | set(first["config"]):
            if k not in FREE:
                _same(r["config"].get(k), first["config"].get(k), f"--{k.replace('_', '-')}", where)
        for k in ("teacher_digest", "host"):
            _same(r[k], first[k], k.replace("_", " "), where)
        _same(measured(r["protocol"]), measured(first["protocol"]), "protocol", where)
        _same(r["settings"][0]["name"], first["settings"][0]["name"], "the baseline setting's name", where)
        for s in r["settings"]:
            _same(settings.setdefault(s["name"], s), s, f"the setting named {s['name']}", where)
        for point, entry in r[key].items():
            mine = union[key].setdefault(point, json.loads(json.dumps(entry)))
            _same(mine["steps_total"], entry["steps_total"], f"the training steps at {point}", where)
            mine["teacher"].update(entry["teacher"])
            for s, runs in entry["runs"].items():
                mine["runs"].setdefault(s, {}).update(runs)
        union["config"]["seeds"] = max(union["config"]["seeds"], r["config"]["seeds"])
    if "protocol" in union and (where / "ref-stats.npz").exists():  # shards from other folders name their own copy
        union["protocol"]["ref"] = str(where / "ref-stats.npz")
    union["config"]["only_seeds"] = None  # the union holds whichever seeds its parts trained
    union["settings"] = list(settings.values())
    union[key] = dict(sorted(union[key].items(), key=lambda kv: -int(kv[0]) if key == "steps" else int(kv[0])))
    if key == "nfe":
        union["config"]["nfes"] = [int(n) for n in union[key]]
    return _ints(union)


def _setting(d: dict):
    return SFDvSetting(**dict(d, counts=tuple(d["counts"]))) if "counts" in d else Setting(**d)


def union_results(out: str | Path) -> dict:
    """The union of OUT/parts/*.json and OUT/results.json, written nowhere: the numbers alone, so a folder holding
    only the small parts files (e.g. committed copies of a study's results, its runs gone) can still be judged."""
    out = Path(out)
    files = sorted((out / PARTS).glob("*.json")) + ([out / "results.json"] if (out / "results.json").exists() else [])
    if not files:
        raise BdenseError(f"{out} holds no compare results (results.json or {PARTS}/); run bdense compare --out {out} "
                          f"first")
    defaults = {f.name: f.default for f in fields(CompareConfig) if f.default is not MISSING}
    parts = [read_json(f) for f in files]
    for r in parts:  # results made before an option existed ran with its default
        r["config"] = {k: v for k, v in dict(defaults, **r["config"]).items() if k != "settings"}
    return merge(parts, out)


def labeled_unions(items: list[str]) -> list[tuple[str, dict]]:
    """LABEL=DIR arguments of the cross-folder study scripts: (label, union_results(DIR)) each, in order (a label
    may repeat: one cell's shard folders); an item without '=' or a folder without results is refused in one line."""
    out = []
    for item in items:
        label, _, d = item.partition("=")
        if not d:
            raise BdenseError(f"{item}: write LABEL=DIR, DIR a compare output folder")
        try:
            out.append((label, union_results(d)))
        except BdenseError as e:
            raise BdenseError(f"{item}: {e}") from None
    return out


def report_union(out: str | Path, device: str | None = None) -> Path:
    """Merge OUT/parts/*.json and OUT/results.json, write the union's results.json and report.md."""
    out = Path(out)
    results = union_results(out)
    names = {f.name for f in fields(CompareConfig)} - {"settings"}
    cfg = CompareConfig(**{k: v for k, v in results["config"].items() if k in names},
                        settings=tuple(_setting(s) for s in results["settings"]))
    cfg.out, cfg.device = str(out), device
    cmp = Comparison(cfg)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))
    return write_report(cmp, results)
