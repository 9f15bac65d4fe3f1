"""Seeded sampling: image i depends only on seed i, at any batch size."""
from __future__ import annotations

from typing import Iterator

import torch

from ..errors import BdenseError
from ..seeds import seed_labels, seed_noise
from ..solvers import solve
from .recipe import Recipe


def model_recipe(denoiser) -> Recipe:
    from .recipe import default_recipe
    meta = denoiser.config.get("meta", {})
    if meta.get("sampling"):
        return Recipe.from_dict(meta["sampling"])
    return default_recipe(denoiser.config["kind"], denoiser.sigma_min, denoiser.sigma_max)


def cycle_classes(classes: list[int] | None, n: int, num_classes: int) -> list[int] | None:
    """One label per image from --class: a single class for all, or a list repeated over the seeds in order."""
    if not classes:
        return None
    if not num_classes:
        raise BdenseError("--class given but the model is unconditional; drop --class")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise BdenseError(f"--class {bad[0]} is out of range: the model has classes 0-{num_classes - 1}")
    return [classes[i % len(classes)] for i in range(n)]


class ClippedDenoiser(torch.nn.Module):
    """denoiser(x, sigma, label) with every branch's x-prediction clamped to [-1, 1] (Recipe.clip_denoised)."""

    def __init__(self, denoiser):
        super().__init__()
        self.inner = denoiser

    def forward(self, x, sigma, label=None):
        return self.inner(x, sigma, label).clamp(-1, 1)


@torch.no_grad()
def generate(denoiser, seeds: list[int], recipe: Recipe, batch_size: int = 256, device="cpu",
             progress: bool = False, classes: list[int] | None = None
             ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """Yield (seeds, images in [-1, 1] float32 on CPU, labels) batch by batch. classes: one label per seed
    (default: drawn from each seed, see bdense.seeds.seed_labels)."""
    sigmas = recipe.sigmas()
    shape = (denoiser.channels, denoiser.resolution, denoiser.resolution)
    from ..models.nfe_embedding import bind_nfe
    net = bind_nfe(denoiser, recipe.nfe)  # an SFD-v student is told the NFE it samples at (and refuses others)
    net = ClippedDenoiser(net) if recipe.clip_denoised else net
    starts = range(0, len(seeds), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="sampling", unit="batch")
    for start in starts:
        chunk = seeds[start:start + batch_size]
        x = seed_noise(chunk, shape, device) * float(sigmas[0])
        if classes is None:
            labels = seed_labels(chunk, denoiser.num_classes, device)
        else:
            labels = torch.tensor(classes[start:start + batch_size], dtype=torch.long, device=device)
        out = solve(recipe.solver, net, x, sigmas, label=labels, **recipe.solver_options())
        yield chunk, out.float().clamp(-1, 1).cpu(), labels


def sample_uint8(denoiser, seeds: list[int], recipe: Recipe, batch_size: int = 256, device="cpu",
                 progress: bool = False, classes: list[int] | None = None):
    """All images as uint8 NHWC (+ labels), in seed order. Under `accelerate launch` each process samples a
    contiguous range of the seeds and the main process gathers them; the images are the same as in one process."""
    import numpy as np
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..data.images import to_uint8
    state = PartialState()
    mine, my_classes = seeds, classes
    if state.num_processes > 1:
        per = -(-len(seeds) // state.num_processes)
        part = slice(state.process_index * per, (state.process_index + 1) * per)
        mine, my_classes = seeds[part], (classes[part] if classes is not None else None)
        device = state.device
        denoiser.to(device)
    imgs, labels = [], []
    for _, im, lab in generate(denoiser, mine, recipe, batch_size=batch_size, device=device,
                               progress=progress and state.is_main_process, classes=my_classes):
        imgs.extend(to_uint8(im))
        labels.extend(lab.cpu().tolist() if lab is not None else [])
    if state.num_processes > 1:
        imgs, labels = gather_object([(imgs, labels)]), None
        imgs, labels = [i for part in imgs for i in part[0]], [x for part in imgs for x in part[1]]
    arr = np.stack(imgs) if imgs else np.zeros((0,))
    return arr, (np.array(labels) if labels else None), state.is_main_process
