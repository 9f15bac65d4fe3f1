"""Every model behind one interface: D(x, sigma, label) -> x0 estimates [B, K, C, H, W] in the EDM sigma view.

EDMDenoiser wraps a network trained with EDM preconditioning; VPDenoiser adapts a variance-preserving model
(eps-, x- or v-prediction, discrete DDPM timesteps or continuous cosine time). K is the number of branches:
the network's output has K*C channels and branch k is channel group k.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import BdenseError
from ..solvers.schedules import cosine_sigma, cosine_t
from .unet import build_unet


def _sigma_vec(sigma, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(sigma):
        sigma = torch.tensor(float(sigma))
    sigma = sigma.to(device=x.device, dtype=torch.float32)
    return sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma.reshape(x.shape[0])


HEAD_MODES = ("shared", "block")  # --branch-heads: what the branches share of the network


def check_heads(mode: str) -> str:
    if mode not in HEAD_MODES:
        raise BdenseError(f"unknown --branch-heads '{mode}'; use shared or block")
    return mode


class BranchHead(nn.Module):
    """An intermediate branch's own copy of the UNet's last stage: the last up-block's final resnet, the output
    norm and the output conv (--branch-heads block). It reads the input the network's own final resnet gets."""

    def __init__(self, net):
        super().__init__()
        self.resnet = copy.deepcopy(last_resnet(net))
        self.norm = copy.deepcopy(net.conv_norm_out)
        self.act = copy.deepcopy(net.conv_act)
        self.conv_out = copy.deepcopy(net.conv_out)

    def copy_from(self, net) -> None:
        """Every weight from the network's own last stage (the endpoint's): the head then computes what it does."""
        for mine, theirs in ((self.resnet, last_resnet(net)), (self.norm, net.conv_norm_out),
                             (self.conv_out, net.conv_out)):
            mine.load_state_dict(theirs.state_dict())

    def forward(self, h, temb):
        return self.conv_out(self.act(self.norm(self.resnet(h, temb))))


def last_resnet(net) -> nn.Module:
    """The UNet's final resnet, after which only conv_norm_out, conv_act and conv_out run; refused otherwise."""
    block = net.up_blocks[-1]
    if (type(block).__name__ != "UpBlock2D" or block.upsamplers is not None or net.config.time_embedding_type
            == "fourier" or any(hasattr(b, "skip_conv") for b in net.up_blocks)):
        raise BdenseError(f"--branch-heads block needs a UNet whose last up-block is a plain UpBlock2D (this one ends "
                          f"with {type(block).__name__}); use --branch-heads shared")
    return block.resnets[-1]


class Denoiser(nn.Module):
    """Base: holds the network and the config that rebuilds it; subclasses map sigma to the network's view."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.net = build_unet(config["net"])
        self.channels = int(config["channels"])
        self.resolution = int(config["resolution"])
        self.num_classes = int(config.get("num_classes", 0))
        self.branches = int(config.get("branches", 1))
        # --branch-heads block: branches 1..K-1 each run their own copy of the last stage (self.heads) on the
        # input of the network's final resnet; the network itself is the endpoint branch, a plain model
        self.branch_heads = check_heads(config.get("branch_heads", "shared"))
        block = self.branch_heads == "block" and self.branches > 1
        self.heads = nn.ModuleList(BranchHead(self.net) for _ in range(self.branches - 1)) if block else None
        self._trunk = None  # the final resnet's inputs during one forward call (block heads only)
        if block:
            last_resnet(self.net).register_forward_hook(self._capture_trunk, with_kwargs=True)
        self.sigma_min = float(config["sigma_min"])
        self.sigma_max = float(config["sigma_max"])
        from . import nfe_embedding
        self.nfe_counts = nfe_embedding.read_counts(config)  # SFD-v students: the NFE they were trained for
        self.nfe_embed = nfe_embedding.build(self.net) if self.nfe_counts else None
        self._nfe_emb = None  # the count's embedding during one forward call only
        if self.nfe_counts:
            self.net.time_embedding.register_forward_hook(self._add_nfe_embedding)
        groups = 1 if block else self.branches  # block heads: the network's output is the endpoint branch alone
        if self.net.config.out_channels != groups * self.channels:
            raise BdenseError(f"network has {self.net.config.out_channels} output channels but the config asks "
                              f"for {groups} branches x {self.channels} channels; the checkpoint is inconsistent")

    def _capture_trunk(self, module, args, kwargs, out):
        self._trunk = (args[0], args[1] if len(args) > 1 else kwargs["temb"])

    def _add_nfe_embedding(self, module, args, out):
        return out if self._nfe_emb is None else out + self._nfe_emb.to(out.dtype)

    def _run_net(self, inp, t, label, nfe):
        """The UNet's output, K*C channels (block heads: theirs in branch order, then the network's, the endpoint)."""
        if self.heads is None:
            return self._net_out(inp, t, label, nfe)
        try:
            out = self._net_out(inp, t, label, nfe)
            h, temb = self._trunk
        finally:
            self._trunk = None
        return torch.cat([head(h, temb) for head in self.heads] + [out], dim=1)

    def _net_out(self, inp, t, label, nfe):
        """The network's output; an SFD-v student adds the embedding of step count `nfe` to its noise embedding
        (plain models take no count and ignore it)."""
        if self.nfe_embed is None:
            return self.net(inp, t, class_labels=label).sample
        from .nfe_embedding import check_nfe
        self._nfe_emb = self.nfe_embed(check_nfe(self, nfe), inp.shape[0], inp.device)
        try:
            return self.net(inp, t, class_labels=label).sample
        finally:
            self._nfe_emb = None

    def _split(self, out: torch.Tensor) -> torch.Tensor:
        b, _, h, w = out.shape
        return out.reshape(b, self.branches, self.channels, h, w)

    def check_input(self, x: torch.Tensor, label) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[-1] != self.resolution:
            raise BdenseError(f"model expects images [B, {self.channels}, {self.resolution}, {self.resolution}], "
                              f"got {list(x.shape)}; use data with matching channels/resolution (--resolution)")
        if label is not None and not self.num_classes:
            raise BdenseError("labels given to an unconditional model; drop them")


class EDMDenoiser(Denoiser):
    """D = c_skip x + c_out F(c_in x, c_noise), per branch (Karras et al. 2022)."""

    def forward(self, x, sigma, label=None, nfe=None):
        s = _sigma_vec(sigma, x)
        sd = float(self.config["edm"]["sigma_data"])
        s4 = s.view(-1, 1, 1, 1)
        c_skip = sd**2 / (s4**2 + sd**2)
        c_out = s4 * sd / (s4**2 + sd**2).sqrt()
        c_in = 1.0 / (s4**2 + sd**2).sqrt()
        c_noise = s.log() / 4 * float(self.config["edm"]["noise_embed_scale"])
        f = self._split(self._run_net(c_in * x, c_noise, label, nfe)).to(x.dtype)
        return c_skip.unsqueeze(1) * x.unsqueeze(1) + c_out.unsqueeze(1) * f


PARAMS = ("eps", "x", "v")
# (c_z, c_pred) of the exact map from a src- to a dst-prediction at z = a x + s eps (a^2 + s^2 = 1):
# dst = c_z z + c_pred src
_CONVERT = {("eps", "x"): lambda a, s: (1 / a, -s / a), ("eps", "v"): lambda a, s: (-s / a, 1 / a),
            ("x", "eps"): lambda a, s: (1 / s, -a / s), ("x", "v"): lambda a, s: (a / s, -1 / s),
            ("v", "x"): lambda a, s: (a, -s), ("v", "eps"): lambda a, s: (s, a)}


def convert_prediction(pred, z, a, s, src: str, dst: str):
    """The dst-prediction (eps | x | v) that has the same x-prediction as the src-prediction `pred` at VP state z:
    a fixed affine map whose coefficients depend on sigma only (e.g. eps -> v: v = (eps - s z) / a)."""
    c_z, c_pred = _CONVERT[(src, dst)](a, s)
    return c_z * z + c_pred * pred


def converted_x0(f, x, sigma4, src: str, dst: str):
    """x0 of a converted head: the network output f read as a src-prediction, mapped to the dst-prediction, and x0
    from that, all in float64 (in float32 the map's coefficients reach 1/a = 2e4 at sigma = e^10 and their rounding
    alone would move x0 by 1e-3); x is the sigma-view input, sigma4 its sigma [B, 1, 1, 1(, 1)]."""
    s = sigma4.double()
    a = 1.0 / (1 + s * s).sqrt()
    sv, z = s * a, x.double() * a
    pred = convert_prediction(f.double(), z, a, sv, src, dst)
    if dst == "eps":
        x0 = x.double() - s * pred
    elif dst == "x":
        x0 = pred
    else:
        x0 = a * z - sv * pred
    return x0.to(x.dtype)


class VPDenoiser(Denoiser):
    """A variance-preserving model seen in the sigma view: sigma^2 = (1 - abar)/abar, x_vp = x / sqrt(1 + sigma^2).

    vp.converted_from (a PD student of another parameterization's teacher, bdense/distill/pd/run.py): the network's
    output is read as that parameterization's prediction and mapped exactly to vp.parameterization's before use."""

    def __init__(self, config: dict):
        super().__init__(config)
        vp = config["vp"]
        self.parameterization = vp["parameterization"]
        self.converted_from = vp.get("converted_from")
        if self.parameterization not in PARAMS:
            raise BdenseError(f"unknown parameterization '{self.parameterization}'; use eps, x or v")
        if self.converted_from is not None and (self.converted_from not in PARAMS
                                                or self.converted_from == self.parameterization):
            raise BdenseError(f"cannot convert a {self.converted_from!r} head to {self.parameterization}-prediction; "
                              f"the checkpoint is inconsistent: use another one")
        self.time = vp["time"]
        if self.time == "discrete":
            abar = discrete_alphas_cumprod(vp["scheduler"])
            self.register_buffer("log_sigmas", (((1 - abar) / abar).sqrt()).log().float(), persistent=False)
        elif self.time != "cosine":
            raise BdenseError(f"unknown VP time '{self.time}'; use discrete or cosine")

    def timestep(self, s: torch.Tensor) -> torch.Tensor:
        """Network time input for sigma: fractional DDPM index (log-sigma interpolation) or 1000 t (cosine)."""
        if self.time == "cosine":
            return 1000.0 * cosine_t(s)
        ls = self.log_sigmas
        logs = s.log().clamp(ls[0], ls[-1])
        hi = torch.searchsorted(ls, logs.contiguous()).clamp(1, len(ls) - 1)
        lo = hi - 1
        w = (logs - ls[lo]) / (ls[hi] - ls[lo])
        return lo.float() + w

    def forward(self, x, sigma, label=None, nfe=None):
        s = _sigma_vec(sigma, x)
        s4 = s.view(-1, 1, 1, 1)
        alpha = 1.0 / (1 + s4**2).sqrt()
        z = x * alpha
        out = self._split(self._run_net(z, self.timestep(s), label, nfe)).to(x.dtype)
        xb, zb, sb, ab = x.unsqueeze(1), z.unsqueeze(1), s4.unsqueeze(1), alpha.unsqueeze(1)
        if self.converted_from is not None:
            return converted_x0(out, xb, sb, self.converted_from, self.parameterization)
        if self.parameterization == "eps":
            return xb - sb * out
        if self.parameterization == "x":
            return out
        return ab * zb - (sb * ab) * out  # v: x0 = alpha z - sigma_vp v


DDPM_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")


def ddpm_arguments(scheduler_config: dict) -> dict:
    """The DDPMScheduler arguments that fix a discrete VP model's alphas_cumprod."""
    return {k: v for k, v in scheduler_config.items() if k in DDPM_KEYS}


def discrete_alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    from diffusers import DDPMScheduler
    return DDPMScheduler(**ddpm_arguments(scheduler_config)).alphas_cumprod.double()


def denoiser_from_config(config: dict) -> Denoiser:
    kind = config.get("kind")
    if kind == "edm":
        return EDMDenoiser(config)
    if kind == "vp":
        return VPDenoiser(config)
    raise BdenseError(f"unknown model kind '{kind}' in checkpoint config; expected edm or vp")


def vp_sigma_range(time: str, scheduler_config: dict | None = None) -> tuple[float, float]:
    if time == "cosine":
        return cosine_sigma(0.0), cosine_sigma(1.0)
    abar = discrete_alphas_cumprod(scheduler_config)
    s = ((1 - abar) / abar).sqrt()
    return float(s[0]), float(s[-1])
