"""Configs for new models: an EDM-preconditioned UNet, or a VP cosine-time UNet (eps, x or v prediction)."""
from __future__ import annotations

from ..errors import BdenseError
from .checkpoint import FORMAT
from .denoisers import Denoiser, denoiser_from_config, vp_sigma_range
from .unet import preset_for, unet_config


def new_model(parameterization: str, channels: int, resolution: int, num_classes: int = 0,
              preset: str | None = None, data: str | None = None) -> Denoiser:
    """parameterization 'edm' builds an EDM denoiser (sigma in [0.002, 80]); eps|x|v build a VP cosine model."""
    preset = preset or preset_for(data or "", resolution)
    net = unet_config(preset, channels, resolution, num_classes=num_classes)
    config = {"format": FORMAT, "net": net, "channels": channels, "resolution": resolution,
              "num_classes": num_classes, "branches": 1, "preset": preset,
              "meta": {"data": data, "role": "teacher"}}
    if parameterization == "edm":
        config.update(kind="edm", sigma_min=0.002, sigma_max=80.0,
                      edm={"sigma_data": 0.5, "noise_embed_scale": 1000.0})
    elif parameterization in ("eps", "x", "v"):
        smin, smax = vp_sigma_range("cosine")
        config.update(kind="vp", sigma_min=smin, sigma_max=smax,
                      vp={"parameterization": parameterization, "time": "cosine"})
    else:
        raise BdenseError(f"unknown --parameterization '{parameterization}'; use edm, eps, x or v")
    return denoiser_from_config(config)
