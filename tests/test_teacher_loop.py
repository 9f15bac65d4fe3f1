"""train-teacher's CPU loop computes exactly what a straightforward loop computes: the speed fixes of issue 23 (one
foreach non-finite check, cached EMA tensors, train() only when needed) must not move a single bit of the weights."""
import math

import torch

from bdense.data.datasets import load_dataset
from bdense.models.checkpoint import load_model
from bdense.models.factory import new_model
from bdense.train.teacher import P_MEAN, P_STD, train_teacher

STEPS, BATCH, LR, DECAY, SEED = 7, 8, 2e-3, 0.9, 3


def reference_teacher(data) -> dict:
    """EDM teacher training written out plainly: warm-up lr, clip at 1, finite check, Adam, EMA with warm-up."""
    torch.manual_seed(SEED)
    model = new_model("edm", 1, 8, preset="tiny", data="digits").train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(SEED)
    warmup = min(200, STEPS // 10)
    sd = float(model.config["edm"]["sigma_data"])
    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = LR * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
        idx = torch.randint(len(data), (BATCH,), generator=gen)
        noise = torch.randn((BATCH, 1, 8, 8), generator=gen)
        x0 = data.images[idx]
        sigma = (torch.randn(BATCH, generator=gen) * P_STD + P_MEAN).exp()
        d = model(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma, None)[:, -1].float()
        w = (sigma.view(-1, 1, 1, 1) ** 2 + sd**2) / (sigma.view(-1, 1, 1, 1) * sd) ** 2
        loss = (w * (d - x0) ** 2).flatten(1).mean(1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None):
            opt.step()
        opt.zero_grad(set_to_none=True)
        decay = min(DECAY, (2 + step) / (11 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].lerp_(v, 1 - decay)
    return ema


def test_teacher_loop_gives_the_reference_weights_bit_for_bit(tmp_path):
    train_teacher("digits", str(tmp_path / "run"), preset="tiny", steps=STEPS, batch=BATCH, lr=LR, ema_decay=DECAY,
                  seed=SEED, device="cpu", progress=False, grid_seeds=2, log_every=3)
    got = load_model(tmp_path / "run" / "model.safetensors").state_dict()
    want = reference_teacher(load_dataset("digits"))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), (k, float((got[k] - want[k]).abs().max()))
    assert not math.isclose(float(sum(v.abs().sum() for v in want.values())), 0.0)
