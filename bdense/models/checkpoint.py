"""Self-describing model files: one .safetensors whose header metadata holds the JSON config that rebuilds it.

Loading refuses pickles unless the user says --trust-pickle, and names the problem with a file that is
missing, truncated, corrupt, or from another tool. A diffusers UNet2DModel + DDPM/DDIM scheduler directory
is accepted as a teacher through the VP adapter.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ..errors import BdenseError
from ..io import atomic_write_bytes, parse_json
from .denoisers import Denoiser, denoiser_from_config, vp_sigma_range

FORMAT = "bdense-model"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def first_nonfinite(tensors: dict) -> str | None:
    """Name of the first floating-point tensor holding NaN or Inf (None when all are finite)."""
    for k, v in tensors.items():
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return k
    return None


def check_finite(tensors: dict, what: str, fix: str) -> None:
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise BdenseError(f"{what}: tensor '{bad}' holds NaN or Inf values; {fix}")


def load_tensors(path: str | Path, what: str, fix: str, fmt: str | None = None) -> dict:
    """The tensors of a plain safetensors file (a weight snapshot, cached images), read with the model loader's rules:
    unreadable, of another format (`fmt`: its header's) or non-finite is one line naming the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise BdenseError(f"{what} {path} is unreadable ({type(e).__name__}: truncated or corrupt); {fix}") from None
    if fmt is not None and md.get("format") != fmt:
        raise BdenseError(f"{what} {path} is not a {fmt} file; {fix}")
    check_finite(tensors, f"{what} {path}", fix)
    return tensors


def mismatch(e: Exception) -> str:
    """The first line of a load_state_dict error (missing/unexpected keys, a shape), short enough for one line."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"


def load_snapshot(model, path, fix: str):
    """Load a weight snapshot (bdense-snapshot file) into `model`; a foreign, corrupt or other-architecture
    snapshot is one line naming the file and `fix`, never a raw state-dict error."""
    tensors = load_tensors(path, "snapshot", fix, "bdense-snapshot")
    try:
        model.load_state_dict(tensors)
    except Exception as e:  # missing/unexpected keys or another shape: made for another network
        raise BdenseError(f"snapshot {path} does not fit this run's network ({mismatch(e)}): it was made by another "
                          f"model or setting; {fix}") from None
    return model


def model_bytes(denoiser: Denoiser, meta: dict | None = None, path=None) -> bytes:
    config = dict(denoiser.config)
    if meta is not None:
        config["meta"] = meta
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in denoiser.state_dict().items()}
    check_finite(tensors, f"not writing {path or 'the model'}",
                 "the weights diverged: lower --lr, use --precision fp32, or check the teacher")
    return canonical_header(st_save(tensors, metadata={"format": FORMAT, "config": json.dumps(config)}))


def canonical_header(data: bytes) -> bytes:
    """The same safetensors bytes with the JSON header's keys sorted: safetensors writes metadata in hash-map
    order, which changes from run to run, and the same model should always be the same file."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header with spaces to 8-byte alignment
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def save_model(path: str | Path, denoiser: Denoiser, meta: dict | None = None) -> Path:
    """Write the model atomically (a kill mid-write leaves any previous file intact)."""
    path = Path(path)
    atomic_write_bytes(path, model_bytes(denoiser, meta, path))
    return path


def read_config(path: str | Path) -> dict:
    """The JSON config of a bdense model file, without loading weights."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        if path.suffix in PICKLE_SUFFIXES:
            raise BdenseError(f"{path} is a pickle file; bdense loads safetensors only "
                              f"(pass --trust-pickle to load a pickled diffusers model you trust)") from None
        raise BdenseError(f"{path} is not a readable safetensors file ({type(e).__name__}); "
                          f"it may be truncated or corrupt: re-export or pick another checkpoint") from None
    if meta.get("format") != FORMAT:
        raise BdenseError(f"{path} is a safetensors file but not a bdense model (no bdense config in its header); "
                          f"pass a diffusers model directory or a file written by bdense")
    return parse_json(meta.get("config", ""), f"the bdense config in {path}'s header",
                      "the file is corrupt or was edited: re-export it or pick another checkpoint")


def load_model(path: str | Path, device="cpu", trust_pickle: bool = False) -> Denoiser:
    """Load a bdense model file, a run directory (its model.safetensors), a bdense diffusers export (its
    bdense.json config and recipe) or a diffusers UNet2DModel+scheduler directory as a Denoiser."""
    path = _existing(path)
    if path.is_dir():
        if (path / "bdense.json").exists():
            return load_diffusers_export(path, device)
        if (path / "model.safetensors").exists() and not (path / "model_index.json").exists():
            return load_model(path / "model.safetensors", device)
        return load_diffusers_teacher(path, device, trust_pickle)
    config = read_config(path)
    check_config(config, str(path), "the file is corrupt or was edited: use another checkpoint")
    try:
        model = denoiser_from_config(config)
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        model.load_state_dict(state)
    except BdenseError:
        raise
    except Exception as e:
        raise BdenseError(f"{path}: weights do not match its config ({mismatch(e)}); the file is corrupt or was "
                          f"edited: use another checkpoint") from None
    check_finite(state, str(path), "the model diverged or the file is corrupt: use an earlier checkpoint")
    return model.to(device).eval()


REQUIRED = ("kind", "net", "channels", "resolution")  # what rebuilds any model: nothing is guessed when one is missing


def check_config(config: dict, where: str, fix: str) -> None:
    """The one check of a model's config, whichever loader read it (model file, run directory, diffusers export,
    diffusers teacher): required fields, the numbers that size everything (an edited resolution could ask for
    terabytes), a sigma range a schedule can span, and a recipe the model can serve."""
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise BdenseError(f"{where} lacks the required config field(s) {', '.join(missing)}; {fix}")

    def ok(key, lo, hi, default=None):
        v = config.get(key, default)
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    if not (ok("channels", 1, 4) and ok("resolution", 1, 1024) and ok("branches", 1, 64, 1)
            and ok("num_classes", 0, 100_000, 0)):
        shown = {k: config.get(k) for k in ("channels", "resolution", "branches", "num_classes")}
        raise BdenseError(f"{where}: impossible model shape in its config {shown}; {fix}")
    lo, hi = config.get("sigma_min"), config.get("sigma_max")
    if lo is not None or hi is not None:
        nums = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (lo, hi))
        if not (nums and 0 < lo < hi):
            raise BdenseError(f"{where}: sigma range [{lo}, {hi}] is not 0 < sigma_min < sigma_max; {fix}")
    meta = config.get("meta") or {}
    folded, recipe = meta.get("folded_nfe"), meta.get("sampling") or {}
    if folded is not None and recipe.get("nfe") != folded:
        raise BdenseError(f"{where}: exported for NFE {folded} (the count is written into its weights) but its recipe "
                          f"says NFE {recipe.get('nfe')}; {fix}")


def check_recipe(config: dict, nfe: int | None, where) -> None:
    """A student exported for one NFE (its step count folded into the weights) samples at that NFE only."""
    folded = (config.get("meta") or {}).get("folded_nfe")
    if folded is not None and nfe is not None and nfe != folded:
        raise BdenseError(f"--nfe {nfe}: {where} was exported for NFE {folded} (its step count is written into its "
                          f"weights); drop --nfe, or export the SFD-v student again with --nfe {nfe}")


def _existing(path) -> Path:
    from .shipped import missing_hint, resolve
    path = resolve(path)  # a short name such as `mnist` finds a teacher shipped in teachers/
    if not path.exists():
        raise BdenseError(f"model file {path} does not exist; train one (bdense train-teacher) or check the path"
                          f"{missing_hint(path)}")
    if not (path.is_file() or path.is_dir()):  # a FIFO or device would block or stream forever
        raise BdenseError(f"{path} is not a regular file; pass a model file or a diffusers model directory")
    return path


def load_diffusers_export(path: Path, device="cpu") -> Denoiser:
    """A folder written by `bdense export --format diffusers`: the config (and recipe) from bdense.json, the
    weights from unet/ (or the folder itself, as older exports wrote them)."""
    fix = "export the model again"
    try:
        config = parse_json((path / "bdense.json").read_text(), str(path / "bdense.json"), fix)
    except (OSError, UnicodeDecodeError) as e:
        raise BdenseError(f"cannot read {path / 'bdense.json'} ({type(e).__name__}); {fix}") from None
    if config.get("format") != FORMAT:
        raise BdenseError(f"{path / 'bdense.json'} is not a bdense config; export the model again")
    check_config(config, str(path / "bdense.json"), fix)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        raise BdenseError(f"{path} has bdense.json but no {weights.relative_to(path)}; export the model again")
    try:
        model = denoiser_from_config(config)
        with safe_open(str(weights), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        model.net.load_state_dict(state)
    except BdenseError:
        raise
    except Exception as e:
        raise BdenseError(f"{weights}: weights do not match bdense.json ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:120]}); export the model again") from None
    check_finite(state, str(weights), "the file is corrupt or was edited: export the model again")
    return model.to(device).eval()


def load_diffusers_teacher(path: Path, device="cpu", trust_pickle: bool = False) -> Denoiser:
    """A diffusers UNet2DModel with a DDPM/DDIM scheduler config, as a VP denoiser (eps, sample or v_prediction)."""
    unet_dir = path / "unet" if (path / "unet" / "config.json").exists() else path
    sched_file = next((p for p in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json")
                       if p.exists()), None)
    if not (unet_dir / "config.json").exists() or sched_file is None:
        raise BdenseError(f"{path} is a directory but not a diffusers model (need unet config.json and "
                          f"scheduler_config.json, as written by save_pretrained)")
    parse_json((unet_dir / "config.json").read_text(), str(unet_dir / "config.json"),
               "re-save the model with save_pretrained")
    sched = parse_json(sched_file.read_text(), str(sched_file), "re-save the model with save_pretrained")
    if sched.get("_class_name") == "BDenseScheduler" or (path / "bdense_pipeline.py").exists():
        raise BdenseError(f"{path} is a bdense diffusers export without its bdense.json (its recipe and config); "
                          f"export the model again (bdense export --format diffusers)")
    from diffusers import UNet2DModel
    has_st = any(unet_dir.glob("*.safetensors"))
    if not has_st and not trust_pickle:
        raise BdenseError(f"{unet_dir} holds pickled weights only; pass --trust-pickle if you trust the file "
                          f"(or convert it to safetensors)")
    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=has_st)
    except Exception as e:  # diffusers raises many types for a bad config or weights
        raise BdenseError(f"{unet_dir} is not a loadable diffusers UNet2DModel ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:120]}); re-save it with save_pretrained") from None
    pred = sched.get("prediction_type", "epsilon")
    param = {"epsilon": "eps", "sample": "x", "v_prediction": "v"}.get(pred)
    if param is None:
        raise BdenseError(f"scheduler prediction_type '{pred}' is not supported; use epsilon, sample or v_prediction")
    ucfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    smin, smax = vp_sigma_range("discrete", sched)
    config = {"format": FORMAT, "kind": "vp", "net": ucfg, "channels": ucfg["in_channels"],
              "resolution": ucfg["sample_size"] if isinstance(ucfg["sample_size"], int) else ucfg["sample_size"][0],
              "num_classes": ucfg.get("num_class_embeds") or 0, "branches": 1, "sigma_min": smin, "sigma_max": smax,
              "vp": {"parameterization": param, "time": "discrete", "scheduler": sched},
              "meta": {"source": str(path), "role": "teacher"}}
    check_config(config, str(sched_file), "re-save the model with save_pretrained")
    model = denoiser_from_config(config)
    try:
        model.net.load_state_dict(unet.state_dict())
    except Exception as e:  # weights diffusers could not fill from the file stay on the meta device
        raise BdenseError(f"{unet_dir}: weights do not match its config.json ({type(e).__name__}); re-save the model "
                          f"with save_pretrained") from None
    check_finite(model.state_dict(), str(path), "the model diverged or the file is corrupt: use another one")
    return model.to(device).eval()
