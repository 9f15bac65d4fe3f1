"""A bdense student (or teacher) as a diffusers pipeline: BDensePipeline + BDenseScheduler.

This file imports only torch, numpy and diffusers, never bdense: `bdense export --format diffusers` copies it
into the export folder as `bdense_pipeline.py` (and `scheduler/bdense_pipeline.py`), so plain diffusers loads
the folder with `DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True)`. With bdense installed,
`from bdense.pipeline import BDensePipeline; BDensePipeline.from_pretrained(DIR)` runs no code from the folder.

Why a scheduler of our own: no stock diffusers scheduler carries a bdense grid exactly. EDMEulerScheduler
re-maps explicit `sigmas` through its Karras/exponential formula, holds them in float32, conditions the network
on 0.25 ln(sigma) (our UNets were trained on 1000x that), ends at 0 or repeats its last sigma (a student ends at
sigma_min = 0.006 without a step to 0), has no analytical first step (AFS), and does not map VP (DDPM) teachers
into the sigma view. BDenseScheduler holds the exact float64 grid and the network's parameterization and does the
same arithmetic as `bdense sample`, so `pipe(seeds=S)` gives bit-identical uint8 images.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

COSINE_LOG_SNR = 10.0  # VP cosine schedule clipped to sigma in [e^-10, e^10] (bdense's cosine time)
PIPELINE_FILE = "bdense_pipeline.py"  # this file's name in an export folder (and in its scheduler/)
CARRIED_FILES = ("bdense.json", "README.md")  # what a re-saved export keeps from the folder it was loaded from


class BDenseScheduler(SchedulerMixin, ConfigMixin):
    """The exact sigma grid and solver of a bdense recipe, and how the network sees (x, sigma).

    sigmas: the grid, descending (float64 values; may end at 0 or at sigma_min). solver: euler | heun.
    afs: the first interval is SFD's analytical first step (no network call). precond: edm | vp.
    edm: sigma_data, noise_embed_scale (network time = ln(sigma)/4 * scale). vp: parameterization eps | x | v,
    time cosine | discrete (ddpm: the DDPMScheduler arguments that give the training alphas_cumprod).
    converted_from: the network's output is that parameterization's prediction, mapped exactly (affine in z) to
    `parameterization`'s (a progressive-distillation student converted from its teacher's; None: no map).
    clip_denoised: clamp the x0 estimate to [-1, 1] at every step (PD students sample so by default).
    """

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, sigmas: list | None = None, solver: str = "euler", afs: bool = False, precond: str = "edm",
                 sigma_data: float = 0.5, noise_embed_scale: float = 1000.0, parameterization: str = "eps",
                 time: str = "cosine", ddpm: dict | None = None, converted_from: str | None = None,
                 clip_denoised: bool = False):
        if not sigmas or any(b >= a for a, b in zip(sigmas, sigmas[1:])) or sigmas[-1] < 0:
            raise ValueError(f"sigmas must be a descending grid ending >= 0, got {sigmas}")
        if solver not in ("euler", "heun"):
            raise ValueError(f"solver must be euler or heun, got {solver!r}")
        if precond not in ("edm", "vp"):
            raise ValueError(f"precond must be edm or vp, got {precond!r}")
        self.log_sigmas = None
        if precond == "vp" and time == "discrete":
            from diffusers import DDPMScheduler
            abar = DDPMScheduler(**(ddpm or {})).alphas_cumprod.double()
            self.log_sigmas = (((1 - abar) / abar).sqrt()).log().float()
        self.set_timesteps()

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, sigmas: list | None = None):
        """Use the stored grid (or explicit `sigmas`); a student was distilled for its grid, so NFE is fixed."""
        grid = [float(s) for s in (sigmas if sigmas is not None else self.config.sigmas)]
        nfe = self.nfe_of(grid)
        if num_inference_steps is not None and num_inference_steps != nfe:
            raise ValueError(f"num_inference_steps={num_inference_steps}: this student was distilled for its own "
                             f"grid of {nfe} network evaluations and serves no other; leave num_inference_steps out "
                             f"(or {nfe})")
        self.sigmas = grid
        self.num_inference_steps = nfe
        self.timesteps = torch.tensor(grid[:-1], dtype=torch.float64)
        self.init_noise_sigma = grid[0]

    def nfe_of(self, grid: list) -> int:
        steps = range(1 if self.config.afs else 0, len(grid) - 1)
        if self.config.solver == "heun":
            return sum(1 if grid[i + 1] == 0 else 2 for i in steps)
        return len(steps)

    # -- the network in the sigma view: D(x, sigma) = precondition_outputs(x, net(*precondition_inputs(x, sigma)))
    def precondition_inputs(self, sample: torch.Tensor, sigma: torch.Tensor):
        """(network input, network time) for images x = x0 + sigma * n and per-image sigma [B] (float32)."""
        s4 = sigma.view(-1, 1, 1, 1)
        if self.config.precond == "edm":
            sd = float(self.config.sigma_data)
            c_in = 1.0 / (s4**2 + sd**2).sqrt()
            return c_in * sample, sigma.log() / 4 * float(self.config.noise_embed_scale)
        alpha = 1.0 / (1 + s4**2).sqrt()
        return sample * alpha, self._vp_time(sigma)

    def precondition_outputs(self, sample: torch.Tensor, model_output: torch.Tensor, sigma: torch.Tensor):
        """The x0 estimate D(x, sigma) from the network's output."""
        s4 = sigma.view(-1, 1, 1, 1)
        f = model_output.to(sample.dtype)
        if self.config.precond == "edm":
            sd = float(self.config.sigma_data)
            c_skip = sd**2 / (s4**2 + sd**2)
            c_out = s4 * sd / (s4**2 + sd**2).sqrt()
            return c_skip * sample + c_out * f
        alpha = 1.0 / (1 + s4**2).sqrt()
        p, src = self.config.parameterization, getattr(self.config, "converted_from", None)
        if src is not None:  # as bdense.models.denoisers.converted_x0 (this file runs without bdense): in float64
            s, x = s4.double(), sample.double()
            a = 1.0 / (1 + s * s).sqrt()
            sv, z = s * a, x * a
            c_z, c_f = {("eps", "x"): (1 / a, -sv / a), ("eps", "v"): (-sv / a, 1 / a), ("x", "eps"): (1 / sv, -a / sv),
                        ("x", "v"): (a / sv, -1 / sv), ("v", "x"): (a, -sv), ("v", "eps"): (sv, a)}[(src, p)]
            pred = c_z * z + c_f * f.double()
            return (x - s * pred if p == "eps" else pred if p == "x" else a * z - sv * pred).to(sample.dtype)
        if p == "eps":
            return sample - s4 * f
        if p == "x":
            return f
        return alpha * (sample * alpha) - (s4 * alpha) * f  # v: x0 = alpha z - sigma_vp v, z = alpha x

    def _vp_time(self, s: torch.Tensor) -> torch.Tensor:
        if self.config.time == "cosine":
            b = math.atan(math.exp(-COSINE_LOG_SNR))
            a = math.atan(math.exp(COSINE_LOG_SNR)) - b
            return 1000.0 * ((torch.atan(s) - b) / a)
        ls = self.log_sigmas.to(s.device)  # fractional DDPM index by log-sigma interpolation
        logs = s.log().clamp(ls[0], ls[-1])
        hi = torch.searchsorted(ls, logs.contiguous()).clamp(1, len(ls) - 1)
        lo = hi - 1
        w = (logs - ls[lo]) / (ls[hi] - ls[lo])
        return lo.float() + w

    # -- one solver step over interval i of the grid ------------------------------------------------------------
    def advance(self, denoise, i: int, sample: torch.Tensor) -> torch.Tensor:
        """x at sigmas[i+1] from x at sigmas[i]; denoise(x, sigma_float) -> x0 estimate."""
        s0, s1 = self.sigmas[i], self.sigmas[i + 1]
        if self.config.afs and i == 0:
            return sample + (s1 - s0) * (sample / math.sqrt(1.0 + s0 * s0))
        d = denoise(sample, s0)
        x_e = d if s1 == 0 else sample + (s1 - s0) * (sample - d) / s0
        if self.config.solver == "euler" or s1 == 0:
            return x_e
        d2 = denoise(x_e, s1)
        return sample + (s1 - s0) * 0.5 * ((sample - d) / s0 + (x_e - d2) / s1)


class BDensePipeline(DiffusionPipeline):
    """Few-step sampling from a bdense export. `pipe(seeds=[0, 1, ...])` reproduces `bdense sample --seeds`:
    image i depends only on seed i (its own noise generator, and for class-conditional models its label drawn from
    a generator seeded with seed + 2**40). `pipe(generator=[torch.Generator().manual_seed(s) for s in seeds])`
    gives the same images from fresh generators; one generator draws the whole batch (diffusers' usual way) and
    reproduces bdense only for batch_size=1.
    """

    def __init__(self, unet: UNet2DModel, scheduler: BDenseScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """A local export folder loads without running code from it; anything else goes through diffusers."""
        path = str(pretrained_model_name_or_path)
        for key in ("trust_remote_code", "custom_pipeline"):
            kwargs.pop(key, None)
        if not os.path.isdir(path):
            return super().from_pretrained(path, **kwargs)
        unet = kwargs.pop("unet", None) or UNet2DModel.from_pretrained(path, subfolder="unet", **kwargs)
        scheduler = kwargs.pop("scheduler", None) or BDenseScheduler.from_pretrained(path, subfolder="scheduler")
        pipe = cls(unet=unet, scheduler=scheduler)
        pipe.bdense_source = path
        return pipe

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """diffusers' save, plus what makes the folder load again as an export: this file as bdense_pipeline.py
        (beside model_index.json and in scheduler/), model_index.json naming it, bdense.json and the model card of
        the folder it was loaded from; every file 0644. push_to_hub=True uploads such a folder."""
        if push_to_hub:
            keys = ("commit_message", "private", "token", "create_pr", "safe_serialization", "variant")
            return self.push_to_hub(kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory)),
                                    **{k: v for k, v in kwargs.items() if k in keys})
        super().save_pretrained(save_directory, **kwargs)
        out, code = str(save_directory), os.path.abspath(__file__)
        for folder in (out, os.path.join(out, "scheduler")):
            shutil.copyfile(code, os.path.join(folder, PIPELINE_FILE))
        stem = PIPELINE_FILE[:-3]
        index_file = os.path.join(out, "model_index.json")
        with open(index_file) as f:
            index = json.load(f)
        index.update(_class_name=[stem, "BDensePipeline"], scheduler=[stem, "BDenseScheduler"])
        with open(index_file, "w") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        source = getattr(self, "bdense_source", None) or getattr(self, "name_or_path", None)  # loaded by diffusers
        for name in CARRIED_FILES if source and os.path.abspath(source) != os.path.abspath(out) else ():
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(out, name))
        share_readable(out)


    def _noise(self, seeds, generator, batch_size, shape):
        if seeds is not None:
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        elif isinstance(generator, (list, tuple)):
            gens = list(generator)
        else:
            return torch.randn((batch_size, *shape), generator=generator), None
        return torch.stack([torch.randn(shape, generator=g, device=g.device).cpu() for g in gens]), gens

    def _labels(self, n, class_labels, gens, generator):
        classes = self.unet.config.num_class_embeds
        if not classes:
            if class_labels is not None:
                raise ValueError("class_labels given to an unconditional model; drop them")
            return None
        if class_labels is not None:
            lab = [class_labels] if isinstance(class_labels, int) else list(class_labels)
            return torch.tensor([int(lab[i % len(lab)]) for i in range(n)], dtype=torch.long)
        if gens is None:
            return torch.randint(classes, (n,), generator=generator)
        return torch.tensor([int(torch.randint(classes, (1,), generator=torch.Generator().manual_seed(
            g.initial_seed() + 2**40))) for g in gens], dtype=torch.long)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, seeds: list | None = None, generator=None, class_labels=None,
                 output_type: str = "pil", return_dict: bool = True, num_inference_steps: int | None = None):
        """Sample len(seeds) images (or batch_size from `generator`). class_labels: an int or a list cycled over
        the images (default: drawn per seed as bdense does). output_type: pil | uint8 (NHWC, as bdense's npz) |
        np (float [0, 1] = uint8 / 255) | pt (float NCHW in [-1, 1]). num_inference_steps: accepted as diffusers
        pipelines take it, but a student has one step count (its grid's): any other is refused."""
        if seeds is not None and generator is not None:
            raise ValueError("pass seeds (reproduces bdense sample) or generator, not both")
        if isinstance(seeds, int):
            seeds = list(range(seeds))
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size and seeds is None:
            batch_size = len(generator)
        cfg, dev = self.unet.config, self.device
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) else \
            (cfg.in_channels, *cfg.sample_size)
        self.scheduler.set_timesteps(num_inference_steps)
        noise, gens = self._noise(seeds, generator, batch_size, shape)
        labels = self._labels(len(noise), class_labels, gens, generator)
        labels = labels.to(dev) if labels is not None else None
        x = noise.to(device=dev, dtype=torch.float32) * float(self.scheduler.sigmas[0])

        def denoise(sample, sigma):
            s = sample.new_full((sample.shape[0],), float(sigma))
            inp, t = self.scheduler.precondition_inputs(sample, s)
            out = self.unet(inp, t, class_labels=labels).sample
            d = self.scheduler.precondition_outputs(sample, out, s)
            return d.clamp(-1, 1) if getattr(self.scheduler.config, "clip_denoised", False) else d

        for i in self.progress_bar(range(len(self.scheduler.sigmas) - 1)):
            x = self.scheduler.advance(denoise, i, x)
        x = x.float().clamp(-1, 1).cpu()
        if output_type == "pt":
            images = x
        else:
            u8 = np.clip(np.round((x.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            if output_type == "uint8":
                images = u8
            elif output_type == "np":
                images = u8.astype(np.float32) / 255.0
            elif output_type == "pil":
                from PIL import Image
                images = [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in u8]
            else:
                raise ValueError(f"output_type must be pil, uint8, np or pt, got {output_type!r}")
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def share_readable(folder: str) -> None:
    """Files 0644 and folders 0755 under `folder`: an export is meant to be read by others (the hub, a team)."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
