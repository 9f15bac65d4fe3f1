"""`bdense train-teacher`: train a diffusion teacher (added to the main app by register(app))."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..options import check


def train_teacher(
    data: str = typer.Option("digits", help="digits | mnist | fashion-mnist | folder:PATH | npz:PATH | cifar10:PATH"),
    out: Path = typer.Option(Path("runs/teacher-digits"), help="run directory"),
    parameterization: str = typer.Option("edm", help="edm (EDM preconditioning) or eps | x | v (VP cosine, for PD)"),
    preset: Optional[str] = typer.Option(None, help="tiny | digits | mnist | cifar | ddpm-cifar10 (default: by resolution)"),
    steps: Optional[int] = typer.Option(None, help="training iterations (default: per data set)"),
    batch: Optional[int] = typer.Option(None, help="global batch size"),
    lr: Optional[float] = None,
    ema_decay: float = 0.999,
    class_cond: bool = typer.Option(False, help="train a class-conditional teacher"),
    resolution: Optional[int] = typer.Option(None, help="resize/pad the data to this size"),
    pad: str = typer.Option("none", help="none (resize to --resolution) | pad (black border up to --resolution)"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16"),
    seed: int = 0,
    resume: bool = typer.Option(False, help="continue the run in --out from its latest checkpoint"),
    checkpoint_every: int = 500,
    log_every: int = typer.Option(50, help="write metrics every N iterations"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    compile: bool = typer.Option(False, help="torch.compile the network (GPU: a small UNet's eager step is bound "
                                 "by kernel launches; minutes to start on CPU)"),
):
    """Train a teacher with the EDM (or VP) loss; writes OUT/model.safetensors and a sample grid."""
    check("train-teacher", locals())
    from ..data.datasets import spec_path
    from ..io import check_out_dir
    check_out_dir("--out", out, [spec_path(data)])
    from ..train.teacher import train_teacher as run
    run(data, str(out), parameterization=parameterization, preset=preset, steps=steps, batch=batch, lr=lr,
        ema_decay=ema_decay, class_cond=class_cond, resolution=resolution, precision=precision, seed=seed,
        resume=resume, checkpoint_every=checkpoint_every, device=device, log_every=log_every, pad=pad,
        compile=compile)


def register(app: typer.Typer) -> None:
    app.command("train-teacher")(train_teacher)
