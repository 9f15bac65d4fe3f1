"""'run i of N' lines with an estimate of the time left, on stdout and in the study's OUT/log.txt.

Why: a comparison or a search runs for hours; without these lines nobody can tell where it is or when it ends.
Runs reused from an earlier invocation finish at once and do not count towards the estimate.
"""
from __future__ import annotations

import time
from pathlib import Path

REUSED_S = 1.0  # a run that took less was reused from disk, not trained


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


class Progress:
    def __init__(self, log: Path, total: int, echo: bool = True):
        self.log, self.total, self.echo = Path(log), total, echo
        self.done, self.durations, self.t0 = 0, [], time.time()

    def start(self, what: str, unit: str = "run") -> float:
        """Announce the next run; returns its start time for finish() (parallel trials each keep their own)."""
        left = self.total - self.done
        eta = (f", about {_minutes(left * sum(self.durations) / len(self.durations))} left" if self.durations
               else "")
        self.write(f"{unit} {self.done + 1} of {self.total}: {what} (elapsed {_minutes(time.time() - self.t0)}{eta})")
        return time.time()

    def finish(self, started: float) -> None:
        took = time.time() - started
        if took >= REUSED_S:
            self.durations.append(took)
        self.done += 1

    def write(self, line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as f:
            f.write(stamped + "\n")
        if self.echo:
            print(stamped, flush=True)
