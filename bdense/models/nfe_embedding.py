"""Step-count conditioning (SFD-v): one student for several NFE, told which NFE it is sampled at.

A second sinusoidal embedding, of the step count n, goes through its own two-layer MLP and is added to the
UNet's noise embedding (after the time MLP, where diffusers adds the class embedding). The MLP's last layer starts
at zero, so a freshly conditioned student computes exactly what the student without it computes. The embedding is
added by a forward hook on `net.time_embedding`, so the UNet's own weights and names stay those of a diffusers
UNet2DModel (EDM or VP, trained by bdense or loaded from diffusers alike).

For one fixed count the added vector is a constant, so `fold_nfe` writes it into the time MLP's last bias: a plain
single-NFE model (the diffusers export), equal up to float rounding.
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from ..errors import BdenseError

KEY = "nfe_embedding"  # config key: {"counts": [2, 3, 4, 5]}


def counts_text(counts) -> str:
    c = sorted(counts)
    return f"{c[0]}-{c[-1]}" if c == list(range(c[0], c[-1] + 1)) else ",".join(map(str, c))


class NFEEmbedding(nn.Module):
    """n -> sinusoid(n) -> Linear -> SiLU -> Linear (zero-initialised) -> a vector added to the noise embedding."""

    def __init__(self, proj_dim: int, emb_dim: int):
        super().__init__()
        self.proj_dim = proj_dim
        self.linear_1 = nn.Linear(proj_dim, emb_dim)
        self.linear_2 = nn.Linear(emb_dim, emb_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, nfe: int, batch: int, device) -> torch.Tensor:
        from diffusers.models.embeddings import get_timestep_embedding
        n = torch.full((batch,), float(nfe), device=device)
        e = get_timestep_embedding(n, self.proj_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        return self.linear_2(nn.functional.silu(self.linear_1(e.to(self.linear_1.weight.dtype))))


def read_counts(config: dict) -> tuple:
    """The trained counts of a config (empty for a plain model); a corrupt entry is refused in one line."""
    spec = config.get(KEY)
    if spec is None:
        return ()
    counts = spec.get("counts") if isinstance(spec, dict) else None
    if not (isinstance(counts, list) and len(counts) >= 2 and len(set(counts)) == len(counts)
            and all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 8 for c in counts)):
        raise BdenseError(f"the model's {KEY} {spec!r} is corrupt (need 2 or more distinct NFE from 1 to 8); "
                          f"the file was edited: use another checkpoint")
    return tuple(sorted(counts))


def build(net) -> NFEEmbedding:
    """An embedding sized for this UNet2DModel: sinusoid as wide as its time projection, output as its time MLP."""
    return NFEEmbedding(int(net.config.block_out_channels[0]), int(net.time_embedding.linear_2.out_features))


def check_nfe(model, nfe) -> int:
    """The count to condition on: one the student was trained for, or a one-line refusal naming them."""
    counts = model.nfe_counts
    if nfe is None:
        raise BdenseError(f"this student serves NFE {counts_text(counts)} (SFD-v); choose one with --nfe")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe not in counts:
        raise BdenseError(f"this student was trained for NFE {counts_text(counts)} only, not --nfe {nfe}; "
                          f"use one of those (or distil a student with --nfe {nfe})")
    return nfe


def with_nfe_embedding(student, counts) -> "torch.nn.Module":
    """A copy of a student that also takes the step count; its output equals the student's at every count."""
    from .denoisers import denoiser_from_config
    if student.nfe_counts:
        raise BdenseError("the model already has a step-count embedding; distil from a single-NFE teacher")
    config = copy.deepcopy(student.config)
    config[KEY] = {"counts": sorted(int(c) for c in counts)}
    new = denoiser_from_config(config)
    missing, unexpected = new.load_state_dict(student.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("nfe_embed.") for k in missing)  # only the new MLP starts fresh
    return new.to(next(student.parameters()).device)


def bind_nfe(model, nfe: int):
    """What a solver calls to sample at `nfe`: the model itself, or the student conditioned on that count."""
    if not getattr(model, "nfe_counts", ()):
        return model
    return functools.partial(model, nfe=check_nfe(model, nfe))


def fold_nfe(model, nfe: int):
    """A plain single-NFE model with the count's embedding written into the time MLP's last bias (export)."""
    from ..sampling.sample import model_recipe
    from .denoisers import denoiser_from_config
    check_nfe(model, nfe)
    config = copy.deepcopy(model.config)
    config.pop(KEY)
    meta = config.setdefault("meta", {})
    meta["sampling"] = model_recipe(model).with_overrides(nfe=nfe).to_dict()
    meta["folded_nfe"] = nfe
    plain = denoiser_from_config(config)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("nfe_embed.")})
    with torch.no_grad():
        p = next(model.parameters())
        plain.net.time_embedding.linear_2.bias.add_(model.nfe_embed(nfe, 1, p.device)[0].to(p.dtype))
    return plain.to(p.device).eval()
