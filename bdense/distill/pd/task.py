"""Progressive distillation (Salimans & Ho 2022) with a K-branch B-DENSE student: VP math and the task (plan: plan.py).

All math is in VP variables z_t = a_t x + s_t eps, a_t = 1/sqrt(1 + sigma^2), s_t = sigma a_t, sigma = sigma(t).
t in [0, 1] maps to sigma with the cosine schedule clipped to the teacher's sigma range: for our cosine models
(lambda in [-20, 20]) that is exactly their own time; for a discrete DDPM teacher it is our reading (the cosine
log-SNR curve between its first and last DDPM sigma). It is the map of the sampling schedule "time-uniform".
A model's x-hat at (z_t, t) is model(z_t / a_t, sigma)[:, k].
"""
from __future__ import annotations

import torch

from ...errors import BdenseError
from ...models.branches import export_endpoint, widen
from ...train.loop import Task, to_device
from ...train.teacher import vp_loss
from .plan import PDPlan


def vp_coeffs(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) with a = 1/sqrt(1 + sigma^2), s = sigma a, shaped [B, 1, 1, 1]."""
    a = 1.0 / torch.sqrt(1.0 + sigma.double() ** 2)
    return a.view(-1, 1, 1, 1), (sigma.double() * a).view(-1, 1, 1, 1)


def x_hat(model, z, sigma, label=None):
    """Every branch's x-prediction at z_t: model(z / a, sigma) -> [B, K, C, H, W]."""
    a, _ = vp_coeffs(sigma)
    return model(z / a.to(z.dtype), sigma.to(z.dtype), label)


def ddim_step(z, x, sig, sig_next):
    """One DDIM step t -> t' with x-prediction x: z' = a' x + s' (z - a x)/s."""
    (a, s), (a2, s2) = vp_coeffs(sig), vp_coeffs(sig_next)
    return a2.float() * x + (s2 / s).float() * (z - a.float() * x)


def ddim_x_target(z, z_next, sig, sig_next):
    """The x that makes one DDIM step from z (at sig) land on z_next (at sig_next): PD's x-tilde."""
    (a, s), (a2, s2) = vp_coeffs(sig), vp_coeffs(sig_next)
    r = s2 / s
    return (z_next - r.float() * z) / (a2 - r * a).float()


@torch.no_grad()
def teacher_two_steps(teacher, z, sigmas: tuple, label=None):
    """Two teacher DDIM steps over sigmas (s, s_mid, s_end): returns (z', z'', the teacher's x-hat at z')."""
    s0, s1, s2 = sigmas
    z1 = ddim_step(z, x_hat(teacher, z, s0, label)[:, -1].float(), s0, s1)
    x1 = x_hat(teacher, z1, s1, label)[:, -1].float()
    return z1, ddim_step(z1, x1, s1, s2), x1


def pd_targets(teacher, z, t, n: int, plan: PDPlan, branches: int, label=None):
    """x-targets [B, K, C, H, W] for student time t ([B] float64) with N = n steps, and the three sigmas.

    With plan.last_step_target x-pred (the reference), the endpoint target of the last step (t = 1/N, which
    samples straight to x) is the teacher's x-prediction at the midpoint, not the x~ formula solved towards
    sigma_min."""
    sig = (plan.sigma(t), plan.sigma(t - 0.5 / n), plan.sigma(t - 1.0 / n))
    sig = tuple(s.to(z.device) for s in sig)
    z1, z2, x1 = teacher_two_steps(teacher, z, sig, label)
    ends = [(z2, sig[2])] if branches == 1 else [(z1, sig[1]), (z2, sig[2])]
    targets = [ddim_x_target(z, zk, sig[0], sk) for zk, sk in ends]
    if plan.last_step_target == "x-pred":
        last = (t * n).round().to(z.device).view(-1, 1, 1, 1) == 1
        targets[-1] = torch.where(last, x1, targets[-1])
    return torch.stack(targets, 1), sig


def pd_loss_per_branch(pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """max(||x~ - x^||^2, ||eps~ - eps^||^2) per branch, batch mean -> [K] (eps via z: SNR-truncated MSE)."""
    return torch.stack([vp_loss(target[:, k], pred[:, k], sigma.float()).mean() for k in range(pred.shape[1])])


class PDTask(Task):
    """One iteration = one optimizer step on a data batch; a new round every plan.round_iters iterations."""

    name = "pd"

    def __init__(self, teacher, student, plan: PDPlan, data, weights, batch: int, random_flip: bool = False):
        if student.branches != plan.branches:
            raise BdenseError(f"student has {student.branches} branches but the plan asks for {plan.branches}")
        self.teacher, self.model, self.plan, self.data, self.weights = teacher, student, plan, data, weights
        self.batch, self.random_flip = batch, random_flip  # flips drawn after the other draws: off is unchanged
        self.conditional = student.num_classes > 0
        self.round = 0
        self.sums = {}  # running sums of this round's metrics (for the round's log line)
        self.teacher.requires_grad_(False).eval()

    def to(self, device):
        to_device(self.model, device)
        to_device(self.teacher, device)

    def lr_position(self, step, total):
        return step % self.plan.round_iters, self.plan.round_iters

    def extra_state(self):
        return ({f"teacher/{k}": v for k, v in self.teacher.state_dict().items()},
                {"round": self.round, "sums": self.sums})

    def load_extra_state(self, tensors, meta):
        self.teacher.load_state_dict({k[len("teacher/"):]: v for k, v in tensors.items() if k.startswith("teacher/")})
        self.round, self.sums = int(meta["round"]), dict(meta.get("sums", {}))

    def next_round(self, tr, r: int) -> None:
        """The student's endpoint branch becomes the teacher; every branch restarts from it; Adam is reset."""
        endpoint = export_endpoint(self.model)
        self.teacher.load_state_dict(endpoint.state_dict())
        self.model.load_state_dict(widen(endpoint, self.plan.branches).state_dict())
        tr.reset_optimizer()
        self.round, self.sums = r, {}

    def _log(self, tr, msg):
        if tr.acc.is_main_process:
            tr.rundir.log(msg)

    def train_step(self, tr, step):
        plan, r = self.plan, step // self.plan.round_iters
        if r != self.round:
            self.next_round(tr, r)
        n = plan.rounds[r]
        if step % plan.round_iters == 0:
            self._log(tr, f"round {r + 1}/{len(plan.rounds)}: teacher {2 * n} DDIM steps -> student {n} steps")
        idx = torch.randint(len(self.data), (self.batch,), generator=tr.gen)
        eps = torch.randn((self.batch,) + tuple(self.data.images.shape[1:]), generator=tr.gen)
        i = torch.randint(1, n + 1, (self.batch,), generator=tr.gen)
        x = self.data.images[idx]
        if self.random_flip:  # PD's reference flips CIFAR-10 images left-right with probability 1/2
            x = torch.where((torch.rand(self.batch, generator=tr.gen) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        x, eps = tr.shard(x), tr.shard(eps)
        t = tr.shard(i.double() / n)
        label = tr.shard(self.data.labels[idx]) if self.conditional else None
        a, s = vp_coeffs(plan.sigma(t))
        z = a.float() * x + s.float() * eps
        with tr.autocast():
            target, sig = pd_targets(self.teacher, z, t, n, plan, plan.branches, label)
            pred = x_hat(tr.ddp_model, z, sig[0], label).float()
        per_branch = pd_loss_per_branch(pred, target, sig[0])
        w = self.weights.at(*plan.weight_position(step))
        loss = sum(wk * lk for wk, lk in zip(w, per_branch))
        tr.backward(loss)
        tr.step()
        metrics = {f"loss/b{k}": v for k, v in enumerate(per_branch.tolist(), 1)}
        for k, v in list(metrics.items()):  # SFD's per-interval keys loss/iI/bK with I = the round: the report's plot
            self.sums[k] = self.sums.get(k, 0.0) + v
            metrics[f"loss/i{r + 1}/{k[5:]}"] = v
        metrics.update(loss=metrics[f"loss/b{plan.branches}"], round=float(r + 1), steps=float(n))
        self.sums["loss"] = self.sums.get("loss", 0.0) + metrics["loss"]
        if (step + 1) % plan.round_iters == 0:
            m = plan.round_iters
            self._log(tr, f"round {r + 1} done ({n} student steps): mean " +
                      " ".join(f"{k}={v / m:.4g}" for k, v in sorted(self.sums.items())))
        return metrics
