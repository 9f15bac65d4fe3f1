"""Teacher training: the EDM loss (log-normal sigma) for EDM models, the truncated-SNR loss for VP cosine models."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..data.datasets import ImageData
from ..models.denoisers import Denoiser
from ..solvers.schedules import cosine_sigma
from .loop import Task, TrainConfig

P_MEAN, P_STD = -1.2, 1.2


def vp_loss(x0: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """max(||x - x^||^2, ||eps - eps^||^2) per sample = max(1, SNR) ||x - x^||^2, SNR = 1/sigma^2 (PD's weighting)."""
    w = torch.clamp(1.0 / sigma.view(-1, 1, 1, 1) ** 2, min=1.0)
    return (w * (d - x0) ** 2).flatten(1).mean(1)


def edm_loss(x0: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    s = sigma.view(-1, 1, 1, 1)
    w = (s**2 + sigma_data**2) / (s * sigma_data) ** 2
    return (w * (d - x0) ** 2).flatten(1).mean(1)


class TeacherTask(Task):
    name = "teacher"

    def __init__(self, model: Denoiser, data: ImageData, batch: int):
        self.model, self.data, self.batch = model, data, batch
        self.conditional = model.num_classes > 0
        self.device_gen, self._gen_state = None, None  # off the CPU: draws on the device (see to())

    def to(self, device) -> None:
        """Off the CPU the whole data set moves to the device and the batch is drawn there, from a generator of
        the device: a host tensor copied in each step is a host sync (pageable copies wait for the stream), and
        the GPU step of a small UNet is bound by such waits. On the CPU nothing changes (the same draws as ever)."""
        super().to(device)
        if torch.device(device).type != "cpu":
            labels = self.data.labels.to(device) if self.data.labels is not None else None
            self.data = replace(self.data, images=self.data.images.to(device), labels=labels)

    def _gen(self, tr) -> torch.Generator:
        if self.data.images.device.type == "cpu":
            return tr.gen
        if self.device_gen is None:  # seeded like tr.gen; a resumed run's state was kept by load_extra_state
            self.device_gen = torch.Generator(self.data.images.device).manual_seed(tr.cfg.seed)
            if self._gen_state is not None:
                self.device_gen.set_state(self._gen_state)
        return self.device_gen

    def extra_state(self) -> tuple[dict, dict]:
        return ({"device_gen": self.device_gen.get_state()} if self.device_gen is not None else {}), {}

    def load_extra_state(self, tensors: dict, meta: dict) -> None:
        self._gen_state = tensors.get("device_gen")
        if self.device_gen is not None and self._gen_state is not None:
            self.device_gen.set_state(self._gen_state)

    def train_step(self, tr, step):
        n, g = len(self.data), self._gen(tr)
        dev = g.device
        idx = torch.randint(n, (self.batch,), generator=g, device=dev)
        noise = torch.randn((self.batch,) + tuple(self.data.images.shape[1:]), generator=g, device=dev)
        x0 = tr.shard(self.data.images[idx])
        label = tr.shard(self.data.labels[idx]) if self.conditional else None
        noise = tr.shard(noise)
        if self.model.config["kind"] == "edm":
            sigma = tr.shard((torch.randn(self.batch, generator=g, device=dev) * P_STD + P_MEAN).exp())
        else:
            sigma = tr.shard(cosine_sigma(torch.rand(self.batch, generator=g, dtype=torch.float64, device=dev)).float())
        with tr.autocast():
            d = tr.ddp_model(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma, label)[:, -1].float()
        if self.model.config["kind"] == "edm":
            loss = edm_loss(x0, d, sigma, float(self.model.config["edm"]["sigma_data"])).mean()
        else:
            loss = vp_loss(x0, d, sigma).mean()
        tr.backward(loss)
        tr.step()
        return {"loss": tr.value(loss)}


# per data set: (steps, batch, lr) that give a usable teacher in minutes on CPU (digits) or a GPU (28x28)
PRESET_TRAINING = {"digits": (2800, 64, 2e-3), "mnist": (20000, 128, 5e-4), "fashion-mnist": (20000, 128, 5e-4)}


def teacher_train_config(steps: int, **kw) -> TrainConfig:
    """The loop settings of every teacher run (benchmarks/bench_teacher_step.py times this same loop)."""
    return TrainConfig(steps=steps, warmup=min(200, steps // 10), grad_clip=1.0, **kw)


def train_teacher(data_spec: str, out: str, parameterization: str = "edm", preset: str | None = None,
                  steps: int | None = None, batch: int | None = None, lr: float | None = None,
                  ema_decay: float = 0.999, class_cond: bool = False, resolution: int | None = None,
                  precision: str = "fp32", seed: int = 0, resume: bool = False, checkpoint_every: int = 500,
                  device: str | None = None, progress: bool = True, grid_seeds: int = 64, log_every: int = 50,
                  pad: str = "none", compile: bool = False):
    """Train a teacher on a data set; writes OUT/model.safetensors (EMA weights) and OUT/samples.png."""
    from ..data.datasets import load_dataset
    from ..data.images import save_grid
    from ..models.checkpoint import save_model
    from ..models.factory import new_model
    from ..sampling.sample import generate, model_recipe
    from .loop import Trainer
    from .rundir import RunDir

    data = load_dataset(data_spec, resolution=resolution, pad=pad)
    d_steps, d_batch, d_lr = PRESET_TRAINING.get(data_spec, (20000, 128, 5e-4))
    # None means the default; 0 is a value (refused by bdense/options.py at the command line)
    steps, batch, lr = (d if v is None else v for v, d in ((steps, d_steps), (batch, d_batch), (lr, d_lr)))
    options = dict(command="train-teacher", data=data_spec, parameterization=parameterization, preset=preset,
                   steps=steps, batch=batch, lr=lr, ema_decay=ema_decay, class_cond=class_cond,
                   resolution=data.resolution, precision=precision, seed=seed, out=str(out),
                   **({"pad": pad} if pad != "none" else {}))
    cfg = teacher_train_config(steps=steps, lr=lr, ema_decay=ema_decay, precision=precision, seed=seed,
                               checkpoint_every=checkpoint_every, progress=progress, device=device, log_every=log_every)
    torch.manual_seed(seed)
    model = new_model(parameterization, data.channels, data.resolution,
                      num_classes=data.num_classes if class_cond else 0, preset=preset, data=data_spec)
    run = RunDir(out, options, resume=resume)  # after every refusal above: a refused run leaves no directory
    run.log(f"teacher: {parameterization} {model.config['preset']} "
            f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params) on {data.name} "
            f"{len(data)}x{data.channels}x{data.resolution}x{data.resolution}, {steps} steps at batch {batch}")
    if compile:  # GPU speed: a small UNet's eager step is bound by kernel launches (H200: 10-20 steps/s at batch 256)
        from .speed import compile_net
        compile_net(model)
        run.log("speed: torch.compile of the network (the first iteration includes compilation)", echo=False)
    trainer = Trainer(TeacherTask(model, data, batch), run, cfg)
    result = trainer.run(resume=resume)
    if not result["completed"]:
        return result
    if trainer.acc.is_main_process:
        from .speed import uncompile_net
        uncompile_net(model)  # the sample grid runs at another batch size: no second compilation
        model.load_state_dict(trainer.final_weights())
        model.eval()
        meta = dict(model.config.get("meta", {}), data=data_spec, role="teacher", trained_steps=steps,
                    data_shape={"resolution": data.resolution, "pad": pad})
        meta["sampling"] = model_recipe(model).to_dict()
        save_model(run.path / "model.safetensors", model, meta)
        images = torch.cat([im for _, im, _ in generate(model, list(range(grid_seeds)), model_recipe(model),
                                                        device=trainer.device)])
        save_grid(images, run.path / "samples.png")
        loss = (f"final loss {result['loss']:.4f}" if "loss" in result else
                "resumed with no steps left: its losses are in metrics.jsonl")
        run.log(f"wrote {run.path / 'model.safetensors'} and samples.png ({loss})")
    return result
