"""Widening a denoiser to K branches (B-DENSE) and stripping it back to the endpoint branch (export).

Two ways to widen (--branch-heads): `shared` tiles the output conv K times, so the branches share everything but
that conv; `block` gives branches 1..K-1 each their own copy of the last stage (the final resnet of the last
up-block, the output norm and conv: Denoiser.heads) and leaves the network itself as the endpoint branch, so the
export drops the copies and keeps the network as it is."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import BdenseError
from .denoisers import Denoiser, check_heads, denoiser_from_config


def _with_branches(denoiser: Denoiser, k: int, conv_out: nn.Conv2d, dropout: float | None = None,
                   heads: str = "shared") -> Denoiser:
    """A copy of denoiser's network (heads dropped) with K branches and this output conv; block heads start as
    copies of the network's last stage."""
    config = copy.deepcopy(denoiser.config)
    config["branches"] = k
    config.pop("branch_heads", None)
    block = heads == "block" and k > 1
    if block:
        config["branch_heads"] = "block"
    if dropout is not None:  # the UNet's resnet dropout, active only in training (SFD trains students with it)
        config["net"]["dropout"] = float(dropout)
    config["net"]["out_channels"] = (1 if block else k) * denoiser.channels
    new = denoiser_from_config(config)
    state = {n: t for n, t in denoiser.state_dict().items()
             if not n.startswith(("net.conv_out.", "heads."))}
    state["net.conv_out.weight"] = conv_out.weight.detach()
    state["net.conv_out.bias"] = conv_out.bias.detach()
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not n.startswith("heads.") for n in missing):
        raise RuntimeError(f"state mismatch widening to {k} branches: {missing} {unexpected}")
    if block:
        for head in new.heads:
            head.copy_from(new.net)
    return new.to(next(denoiser.parameters()).device)


def widen(teacher: Denoiser, k: int, dropout: float | None = None, heads: str = "shared") -> Denoiser:
    """A copy of a single-branch teacher with k branches, every one equal to it.

    dropout: the student's UNet dropout probability (None keeps the teacher's). heads: shared (the output conv
    tiled k times) or block (branches 1..k-1 get their own copy of the last stage; see the module doc)."""
    if teacher.branches != 1:
        raise BdenseError(f"the teacher already has {teacher.branches} branches; export it first (bdense export)")
    if k < 1:
        raise BdenseError(f"--branches must be >= 1, got {k}")
    if dropout is not None and not 0 <= dropout < 1:
        raise BdenseError(f"--dropout must be in [0, 1), got {dropout}")
    if check_heads(heads) == "block" and k > 1:
        return _with_branches(teacher, k, teacher.net.conv_out, dropout, heads="block")
    old = teacher.net.conv_out
    conv = nn.Conv2d(old.in_channels, k * old.out_channels, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        conv.weight.copy_(old.weight.repeat(k, 1, 1, 1))
        conv.bias.copy_(old.bias.repeat(k))
    return _with_branches(teacher, k, conv, dropout)


def export_endpoint(student: Denoiser) -> Denoiser:
    """The endpoint branch (the last channel group) as a standard single-branch model of the baseline's cost."""
    c, k = student.channels, student.branches
    if student.heads is not None:  # block heads: the network is the endpoint branch already
        return _with_branches(student, 1, student.net.conv_out)
    old = student.net.conv_out
    conv = nn.Conv2d(old.in_channels, c, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        conv.weight.copy_(old.weight[(k - 1) * c:])
        conv.bias.copy_(old.bias[(k - 1) * c:])
    return _with_branches(student, 1, conv)


def reparameterize(model: Denoiser, param: str) -> Denoiser:
    """The same network with its output read as a `param`-prediction, through the exact affine map from the
    parameterization it was trained in (VPDenoiser.converted_from): at step 0 it predicts exactly what the model
    predicts (up to float rounding). Converting back to the trained parameterization removes the map."""
    if model.config.get("kind") != "vp":
        raise BdenseError("only VP models (eps, x or v prediction) have a parameterization to convert; EDM "
                          "students keep their preconditioning")
    config = copy.deepcopy(model.config)
    vp = config["vp"]
    source = vp.pop("converted_from", vp["parameterization"])
    vp["parameterization"] = param
    if param != source:
        vp["converted_from"] = source
    new = denoiser_from_config(config)
    new.load_state_dict(model.state_dict())
    return new.to(next(model.parameters()).device).train(model.training)
