"""PD with --student-param eps vs v vs x from the same seed, against a rounding-level control (docs/pd.md).

Why (issue 14): the exact head conversion is the same function of the weights, so the runs agree in exact
arithmetic (tests/test_pd_param.py checks loss and gradients in float64). In float32 they differ; this says by
how much, next to what any rounding change makes: the eps run with the teacher's weights times 1 + 1e-7 N(0, 1).
Random tiny eps teacher (digits 8x8), K = 2, rounds 8 -> 4 -> 2, 3 iterations each, batch 8, lr 1e-3, seed 0.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/pd_param_noise.py     # ~15 s on one CPU core
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bdense.distill.pd.run import distill_pd
from bdense.models.checkpoint import load_model, save_model
from bdense.models.factory import new_model

RUN = dict(branches=2, start_steps=8, end_steps=2, round_iters=3, batch=8, lr=1e-3, device="cpu", progress=False,
           grid_seeds=1)


def main() -> None:
    d = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    m = new_model("eps", 1, 8, preset="tiny", data="digits").eval()
    teacher = save_model(d / "eps.safetensors", m)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g))
    perturbed = save_model(d / "eps-perturbed.safetensors", m)
    runs = {}
    for name, t, param in [("eps", teacher, "eps"), ("v", teacher, "v"), ("x", teacher, "x"),
                           ("control", perturbed, "eps")]:
        distill_pd(str(t), str(d / name), student_param=param, **RUN)
        runs[name] = load_model(d / name / "model.safetensors")
    ref, start = runs["eps"].state_dict(), load_model(teacher)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(9)) * 0.5
    with torch.no_grad():
        xe, xt = runs["eps"](x, 0.5)[:, -1], start(x, 0.5)[:, 0]
        for name in ("v", "x", "control"):
            b = runs[name].state_dict()
            diff = torch.cat([(ref[k] - b[k]).abs().flatten() for k in ref])
            dx = (xe - runs[name](x, 0.5)[:, -1]).pow(2).mean().sqrt()
            share = (diff > RUN["lr"] / 10).float().mean()
            print(f"eps vs {name:7s}: weights max |diff| {diff.max():.2g}, {share:.1%} of entries > lr/10; endpoint "
                  f"x-hat at sigma 0.5: RMS diff {dx:.3g} (training moved it {(xe - xt).pow(2).mean().sqrt():.3g} "
                  f"from the teacher)")


if __name__ == "__main__":
    main()
