"""UNet presets per data set, built with diffusers' UNet2DModel from a plain config dict."""
from __future__ import annotations

from ..errors import BdenseError

# channels per resolution level; attention on the lowest level only
PRESETS = {
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),       # tests, 8x8/16x16
    "digits": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),     # 8x8 CPU teacher
    "mnist": dict(block_out_channels=(32, 64, 64), layers_per_block=2, norm_num_groups=16), # 28x28
    "cifar": dict(block_out_channels=(64, 128, 128), layers_per_block=2, norm_num_groups=32),
    # the DDPM CIFAR-10 layout (35.7M parameters), for speed checks at CIFAR size; its attention is one head over
    # all 256 channels as in DDPM (heads of width 8 would be 32 tiny heads, slow in fused attention kernels)
    "ddpm-cifar10": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2, norm_num_groups=32,
                         attn_levels=(1,), attention_head_dim=None),
}


def preset_for(data_name: str, resolution: int) -> str:
    """The preset a data set gets when the user names none."""
    if resolution <= 16:
        return "digits"
    return "mnist" if resolution <= 28 else "cifar"


def unet_config(preset: str, channels: int, resolution: int, out_channels: int | None = None,
                num_classes: int = 0) -> dict:
    """A UNet2DModel config (JSON-able) for a preset."""
    if preset not in PRESETS:
        raise BdenseError(f"unknown model preset '{preset}'; choose one of {', '.join(PRESETS)}")
    p = dict(PRESETS[preset])
    levels = len(p["block_out_channels"])
    attn = set(p.pop("attn_levels", (levels - 1,)))
    if resolution % (2 ** (levels - 1)):
        raise BdenseError(f"resolution {resolution} is not divisible by {2 ** (levels - 1)} as preset '{preset}' "
                          f"needs; pick another preset or pad the data (--resolution)")
    down = ["AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels))]
    cfg = dict(sample_size=resolution, in_channels=channels, out_channels=out_channels or channels,
               down_block_types=down, up_block_types=up, attention_head_dim=p.pop("attention_head_dim", 8),
               **{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()})
    if num_classes:
        cfg["num_class_embeds"] = num_classes
    return cfg


def build_unet(config: dict):
    from diffusers import UNet2DModel
    return UNet2DModel(**config)
