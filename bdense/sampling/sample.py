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


def sample_uint8(denoiser, seeds: list[int], recipe: Recipe, batch_size: int = 256, device="cpu",
                 progress: bool = False):
    """All images as uint8 NHWC (+ labels), in seed order. Under `accelerate launch` each process samples a
    contiguous range of the seeds and the main process gathers them; the images are the same as in one process."""
    import numpy as np
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..data.images import to_uint8
    state = PartialState()
    mine = seeds
    if state.num_processes > 1:
        per = -(-len(seeds) // state.num_processes)
        mine = seeds[state.process_index * per:(state.process_index + 1) * per]
        device = state.device
        denoiser.to(device)
    imgs, labels = [], []
    for _, im, lab in generate(denoiser, mine, recipe, batch_size=batch_size, device=device,
                               progress=progress and state.is_main_process):
        imgs.extend(to_uint8(im))
        labels.extend(lab.cpu().tolist() if lab is not None else [])
    if state.num_processes > 1:
        imgs, labels = gather_object([(imgs, labels)]), None
        imgs, labels = [i for part in imgs for i in part[0]], [x for part in imgs for x in part[1]]
    arr = np.stack(imgs) if imgs else np.zeros((0,))
    return arr, (np.array(labels) if labels else None), state.is_main_process
