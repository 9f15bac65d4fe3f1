"""Do the intermediate branches compete with the endpoint? Per interval, the endpoint branch's training loss of a
B-DENSE setting against the baseline's (same training seed), and how hard the intermediate branches are.

    python benchmarks/branch_competition.py 'digits A=runs/confirm/sfd-digits-a-nfe2' 'digits B=...' ...

Reads LABEL=DIR, DIR a `bdense compare` output folder whose run directories are still on this machine (the
committed parts alone carry no training losses). For every NFE (SFD) and interval i, over the training seeds with
both runs, the mean of the last --tail of each run's logged losses (loss/iI/bK in metrics.jsonl):
  endpoint / baseline: the setting's endpoint-branch loss over the baseline's loss on the same interval, per seed,
      then the mean and its 95% t-interval; above 1, the endpoint fits the teacher worse than it does alone;
  inner / endpoint: the intermediate branches' mean loss over the endpoint's (how far their targets are to fit).
Descriptive: it reads training losses, which the verdicts do not use; docs/confirmation.md puts it beside them.
The same table, one folder at a time, is in every SFD compare report (bdense/studies/branches.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bdense.errors import BdenseError  # noqa: E402
from bdense.studies.branches import competition, row_cells  # noqa: E402
from bdense.studies.union import labeled_unions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="LABEL=DIR of one compare output folder (run directories present)")
    ap.add_argument("--tail", type=float, default=0.2, help="the fraction of each run's last logged losses averaged")
    a = ap.parse_args(argv)
    if not 0 < a.tail <= 1:
        print(f"error: --tail {a.tail}: give a fraction in (0, 1], e.g. 0.2", file=sys.stderr)
        return 2
    try:
        tables = [(label, competition(results, a.tail)) for label, results in labeled_unions(a.folders)]
    except BdenseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, rows in tables:
        if not rows:
            print(f"error: {label}: no run with logged branch losses on this machine (its run directories are gone?)",
                  file=sys.stderr)
            return 2
    print(f"End-of-training losses (mean of each run's last {a.tail:.0%} of log lines), paired on training seeds.\n")
    print("| cell | point | setting | interval | endpoint / baseline (95% t) | inner / endpoint | seeds |")
    print("|---|---|---|---|---|---|---|")
    for label, rows in tables:
        for r in rows:
            print(f"| {label} | {row_cells(r)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
