"""The `bdense` command: the app, its commands gathered from the rooms that own them (each a thin typer function that
parses options and calls the library), and the one place that turns a refusal into a one-line error and exit code."""
from __future__ import annotations

import errno
import sys

import typer

from .errors import BdenseError, Interrupted

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Few-step diffusion students by distillation (SFD, progressive distillation) with B-DENSE.")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__
        typer.echo(f"bdense {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")):
    """Few-step diffusion students by distillation (SFD, progressive distillation) with B-DENSE."""


# every command lives beside what it runs; the order here is the order of `bdense --help`
from .train.cli import register as register_train  # noqa: E402
from .sampling.cli import register as register_sampling  # noqa: E402
from .distill.cli import register as register_distill  # noqa: E402
from .studies.cli import register as register_studies  # noqa: E402
from .data.cli import register as register_data  # noqa: E402
from .models.cli import register as register_models  # noqa: E402
from .metrics.cli import register as register_metrics  # noqa: E402
for _register in (register_train, register_sampling, register_distill, register_studies, register_data,
                  register_models, register_metrics):
    _register(app)


_COMMAND = []  # the click command built from `app` once per process (building it is most of a refusal's time)


def command():
    """The click command tree of `bdense`, with every option's help completed by an example (bdense.clihelp)."""
    if not _COMMAND:
        from .clihelp import teach
        root = typer.main.get_command(app)
        teach(root)
        _COMMAND.append(root)
    return _COMMAND[0]


def _on_signal(signum, frame):
    raise Interrupted(signum)  # outside a trainer (which checkpoints first): stop the whole command, exit 130/143


def main() -> None:
    import signal

    from typer._click import exceptions as click  # typer >= 0.2x carries its own click
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, _on_signal) for s in sigs} if _main_thread() else {}
    try:
        code = command().main(prog_name="bdense", standalone_mode=False)
    except Interrupted as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except BdenseError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.NoArgsIsHelpError as e:  # a bare group: its help, as click would show it
        typer.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        sys.exit(2)
    except click.UsageError as e:  # a malformed value or unknown option: one line, like every other refusal
        cmd = e.ctx.command_path if e.ctx else "bdense"
        typer.echo(f"error: {e.format_message()} (see {cmd} --help)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted by SIGINT", err=True)
        sys.exit(130)
    except OSError as e:  # the file system refused (name too long, permission, ...): the user's path, one line
        where = f" ({e.filename})" if e.filename else ""
        fix = ("free space or choose another output path" if e.errno == errno.ENOSPC
               else "check the path and its permissions")
        typer.echo(f"error: {e.strerror or e}{where}; {fix}", err=True)
        sys.exit(2)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    sys.exit(code if isinstance(code, int) else 0)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    main()
