"""Distillation hosts behind one interface, so that `compare`, `tune` and the report never ask which host runs.

A host turns a study's settings into training runs and says how to evaluate them. The study (bdense/studies/compare.py)
owns what every host shares: the teacher, held-out evaluation seeds, the FID features and reference statistics,
measuring, reuse of finished work, verdicts and the report. A host provides:

- `check_config(cfg)` (static): refuse a bad grid before anything is loaded or written;
- `points()`: the evaluation points, each a student step count (SFD: one per --nfe; PD: one per round);
- `references(point)`: {metric: images} the students are compared with, from the evaluation seeds;
- `teacher_rows(point)`: {row name: Recipe to sample the teacher with, or a metric name = those reference images};
  `start_row(point)`: the row that is step 0 of training;
- `train(point, setting, seed)`: train (or reuse) one run; returns its directory (PD: one run serves every point);
- `snapshots(run_dir, point)`: [(evals.json key, step within the point, weights file)], `steps_total(point)`;
- `student(run_dir, point)`: (model with the final weights of that point, the Recipe it samples with there);
- `tag(point)`: the point's name in file and cache keys; `describe()`: the report's words and metric names.

For `bdense tune` (bdense/studies/tune.py) a host also provides, given the TuneConfig: `tune_setup` (what a continued
study must match), `tune_prepare` (shared assets and the reference images of the tuning seeds), `tune_iterations`,
`tune_student(k)` (a model the trial's snapshots load into), `tune_recipe(step)` (how a snapshot samples),
`tune_run_options` (the distill keywords of one trial, with snapshots at the report points), `tune_cost` and
`tune_words` (the report's wording).

To add a host (e.g. SFD-v): write one module with a class of that shape and register it in HOSTS.
"""
from __future__ import annotations

from ..errors import BdenseError


def host_class(method: str):
    from .pd import PDHost
    from .sfd import SFDHost
    hosts = {"sfd": SFDHost, "pd": PDHost}
    if method not in hosts:
        raise BdenseError(f"unknown --method '{method}'; use {' or '.join(hosts)}")
    return hosts[method]
