"""What a compare results dict holds and where: its grid of points (NFEs for SFD, rounds for PD), metric names and
per-seed values. Below the report and every study script that reads results."""
from __future__ import annotations

METRICS = {"fid": "domain FID", "rmse": "RMSE to teacher reference"}  # results without a host entry (SFD)


def metrics(results: dict) -> dict:
    return results.get("host", {}).get("metrics", METRICS)


def grid(results: dict) -> dict:
    """{point: entry}: the per-NFE (SFD) or per-round (PD) results."""
    return results[results.get("host", {}).get("grid_key", "nfe")]


def point_name(results: dict) -> str:
    return results.get("host", {}).get("point_name", "NFE")


def seed_values(runs: dict, step: int, metric: str) -> dict:
    """{training seed: value at this step}; nan for a run without it (stopped early), so it is counted as missing
    rather than silently left out. Verdicts pair baseline and setting on these keys, never on list position."""
    return {seed: r["evals"][step][metric] if step in r["evals"] else float("nan") for seed, r in runs.items()}


def first_run(runs: dict) -> dict:
    """The run of the lowest training seed (plots and sample grids show one seed)."""
    return runs[min(runs, key=int)]
