"""One exception type for refusals the user can fix (the CLI prints it as a single line and exits 2), and one for a
command stopped by a signal (exit 128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM)."""
import signal


class BdenseError(Exception):
    """A problem with the user's input or environment, stated with its fix."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM stopped a command (a trainer stops after writing its checkpoint): never exit 0.

    A BaseException, like KeyboardInterrupt, so no `except Exception` goes on to the next run: a compare or tune
    stops as a whole. Not a KeyboardInterrupt, which typer turns into a silent exit 130 whatever the signal."""

    def __init__(self, signum: int = signal.SIGINT, where: str = ""):
        super().__init__(where)
        self.signum = int(signum)
        self.where = where

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"interrupted by {name}" + (f": {self.where}" if self.where else "")
