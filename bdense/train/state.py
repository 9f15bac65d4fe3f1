"""Flatten optimizer and RNG state to tensors + JSON so training checkpoints need no pickle."""
from __future__ import annotations

import torch


def optimizer_to_flat(opt: torch.optim.Optimizer, prefix: str = "optim/") -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{prefix}{idx}/{key}"] = val
            else:
                scalars[f"{idx}/{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str = "optim/") -> None:
    state: dict = {}
    for name, val in tensors.items():
        if name.startswith(prefix):
            idx, key = name[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
