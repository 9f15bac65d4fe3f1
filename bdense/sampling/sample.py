"""Seeded sampling: image i depends only on seed i, at any batch size."""
from __future__ import annotations

from typing import Iterator

import torch

from ..seeds import seed_labels, seed_noise
from ..solvers import solve
from .recipe import Recipe


def model_recipe(denoiser) -> Recipe:
    from .recipe import default_recipe
    meta = denoiser.config.get("meta", {})
    if meta.get("sampling"):
        return Recipe.from_dict(meta["sampling"])
    return default_recipe(denoiser.config["kind"], denoiser.sigma_min, denoiser.sigma_max)


@torch.no_grad()
def generate(denoiser, seeds: list[int], recipe: Recipe, batch_size: int = 256, device="cpu",
             progress: bool = False) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """Yield (seeds, images in [-1, 1] float32 on CPU, labels) batch by batch."""
    sigmas = recipe.sigmas()
    shape = (denoiser.channels, denoiser.resolution, denoiser.resolution)
    chunks = [seeds[i:i + batch_size] for i in range(0, len(seeds), batch_size)]
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="sampling", unit="batch")
    for chunk in chunks:
        x = seed_noise(chunk, shape, device) * float(sigmas[0])
        labels = seed_labels(chunk, denoiser.num_classes, device)
        out = solve(recipe.solver, denoiser, x, sigmas, label=labels, afs=recipe.afs)
        yield chunk, out.float().clamp(-1, 1).cpu(), labels
