"""Exponential moving average of weights, with the warm-up (1+n)/(10+n) so early averages are not stale."""
from __future__ import annotations

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        floats = [k for k, v in live.items() if v.dtype.is_floating_point]
        torch._foreach_lerp_([self.shadow[k] for k in floats], [live[k].detach() for k in floats], 1 - d)
        for k, v in live.items():
            if not v.dtype.is_floating_point:
                self.shadow[k].copy_(v)
