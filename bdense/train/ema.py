"""Exponential moving average of weights, with the warm-up (1+n)/(10+n) so early averages are not stale."""
from __future__ import annotations

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._pairs = None  # (shadow dict, float shadows, float live tensors, other pairs), built on first update

    def _pairs_for(self, model: torch.nn.Module):
        """The live tensors beside their shadows, looked up once (state_dict() per step costs ~1 ms of Python on a
        small UNet); looked up again when the shadow dict is replaced (resume). keep_vars: the live objects."""
        if self._pairs is None or self._pairs[0] is not self.shadow:
            live = model.state_dict(keep_vars=True)
            floats = [k for k, v in live.items() if v.dtype.is_floating_point]
            others = [(self.shadow[k], live[k]) for k, v in live.items() if not v.dtype.is_floating_point]
            self._pairs = (self.shadow, [self.shadow[k] for k in floats], [live[k] for k in floats], others)
        return self._pairs[1:]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadows, live, others = self._pairs_for(model)
        torch._foreach_lerp_(shadows, live, 1 - d)
        for s, v in others:
            s.copy_(v)
