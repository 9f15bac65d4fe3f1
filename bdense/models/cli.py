"""Model commands: `bdense export` and `bdense teachers list|pack` (added by register(app))."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..options import check

teachers_app = typer.Typer(no_args_is_help=True, help="Teachers shipped in bdense/teachers/ and your own: list them, "
                           "pack a new one (bf16).")


def export(
    model: Path = typer.Argument(..., help="a K-branch student, e.g. runs/sfd-k4/model.safetensors"),
    out: Path = typer.Option(..., help="a .safetensors file, or a new directory with --format diffusers, "
                             "e.g. student-diffusers/"),
    format: str = typer.Option("bdense", help="bdense (one file) | diffusers (pipeline folder that "
                               "DiffusionPipeline.from_pretrained loads), e.g. diffusers"),
    metrics: list[Path] = typer.Option([], help="diffusers: quality for the model card, the --out JSON of bdense "
                                       "fid calc or agreement (repeatable), e.g. fid.json"),
    overwrite: bool = typer.Option(False, help="replace an existing --out file (or diffusers folder)"),
    nfe: Optional[int] = typer.Option(None, help="an SFD-v student: the NFE to export it for (the count is written "
                                      "into the weights), e.g. 3"),
):
    """Keep only the endpoint branch: a standard model that samples at exactly the baseline's cost."""
    check("export", locals())
    from ..io import check_out_dir, check_outputs
    if format == "bdense":
        check_outputs({"--out": out}, [model], overwrite)
    else:
        check_out_dir("--out", out, [model], new=True, overwrite=overwrite)
    from .export import export_model
    path = export_model(model, out, format, metrics=metrics, nfe=nfe)
    typer.echo(f"wrote {path}")


@teachers_app.command("list")
def teachers_list():
    """The shipped teachers and the first lines of their cards."""
    from .shipped import list_teachers, teachers_dirs
    found = list_teachers()
    if not found:
        typer.echo(f"no teachers in {' or '.join(str(d) for d in teachers_dirs())}")
    for name, path in found.items():
        card = path.with_suffix(".md")
        typer.echo(f"{name}: {path} ({path.stat().st_size / 2**20:.2f} MiB){'' if card.exists() else ', no card'}")


@teachers_app.command("pack")
def teachers_pack(
    model: Path = typer.Argument(..., help="a trained teacher (its run directory's options.json gives the command)"),
    name: str = typer.Option(..., help="short name, e.g. mnist: then --teacher mnist finds it"),
    out: Optional[Path] = typer.Option(None, help="folder (default: your teachers folder, $BDENSE_TEACHERS or "
                                       "~/.local/share/bdense/teachers; bdense/teachers to ship it in the package)"),
    quality: list[str] = typer.Option([], help="a quality line for the card (repeatable), e.g. 'Heun 35: Inception FID 4.1 (10k)'"),
    command: Optional[str] = typer.Option(None, help="the training command (default: from options.json)"),
    check_seeds: int = typer.Option(64, help="seeds sampled to measure what bf16 storage changes"),
    overwrite: bool = typer.Option(False, help="replace a teacher of that name already in --out"),
):
    """Store a teacher in bf16 with its model card (NAME.safetensors + NAME.md) in your teachers folder."""
    check("teachers pack", locals())
    from .shipped import pack
    st, card = pack(model, name, out, quality=tuple(quality), check_seeds=check_seeds, command=command,
                    overwrite=overwrite)
    typer.echo(f"wrote {st} ({st.stat().st_size / 2**20:.2f} MiB) and {card}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.add_typer(teachers_app, name="teachers")
