"""Export: strip a student to its endpoint branch, as a bdense file or a complete diffusers pipeline folder.

The diffusers folder (docs/formats.md) holds unet/ (UNet2DModel), scheduler/ (BDenseScheduler: the exact grid and
parameterization), model_index.json, bdense_pipeline.py (a copy of bdense/pipeline.py, so plain diffusers loads it),
bdense.json (the bdense config, so bdense loads it back with its recipe) and a model card README.md. Every file is
a function of the source model and the --metrics files only: exporting twice gives byte-identical folders.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import BdenseError
from ..io import atomic_dir, file_digest
from .branches import export_endpoint
from .checkpoint import load_model, save_model
from .denoisers import Denoiser, ddpm_arguments



def export_model(src: str | Path, out: str | Path, fmt: str = "bdense", metrics: list | tuple = (),
                 nfe: int | None = None) -> Path:
    """nfe: export an SFD-v student for that one NFE (its count embedding folded into the weights)."""
    if fmt not in ("bdense", "diffusers"):
        raise BdenseError(f"unknown export --format '{fmt}'; use bdense or diffusers")
    if metrics and fmt != "diffusers":
        raise BdenseError("--metrics goes into the model card of a diffusers export; add --format diffusers")
    model = load_model(src)
    from .nfe_embedding import counts_text, fold_nfe
    if nfe is not None:
        if not model.nfe_counts:
            raise BdenseError(f"--nfe is for students trained for several NFE (SFD-v); {src} has one recipe: drop "
                              f"--nfe")
        model = fold_nfe(model, nfe)
    elif model.nfe_counts and fmt == "diffusers":
        raise BdenseError(f"{src} serves NFE {counts_text(model.nfe_counts)} through a step-count embedding that a "
                          f"diffusers UNet cannot carry; pass --nfe N to export it for one NFE")
    single = export_endpoint(model) if model.branches > 1 else model
    meta = dict(model.config.get("meta", {}), exported_from=str(src), exported_from_digest=file_digest(src),
                branches_before_export=model.branches)
    single.config["meta"] = meta
    out = Path(out)
    if fmt == "bdense":
        return save_model(out, single)
    quality = [_read_metrics(p, file_digest(src)) for p in metrics]
    with atomic_dir(out) as tmp:  # a fresh temporary name: nothing that exists is deleted (the CLI checked --out)
        write_diffusers_folder(single, tmp, src, quality)
    return out


def scheduler_config(model: Denoiser) -> dict:
    """BDenseScheduler arguments that reproduce `bdense sample` with the model's own recipe."""
    from ..sampling.sample import model_recipe
    recipe = model_recipe(model)
    if recipe.solver not in ("euler", "heun"):
        raise BdenseError(f"the model's recipe uses {recipe.solver}; the diffusers export carries euler or heun "
                          f"recipes only (export the bdense format, or sample it with bdense)")
    cfg = model.config
    args = dict(sigmas=[float(s) for s in recipe.sigmas().tolist()], solver=recipe.solver, afs=recipe.afs)
    if recipe.clip_denoised:  # a PD student's recipe: left out otherwise, so older exports stay byte-identical
        args["clip_denoised"] = True
    if cfg["kind"] == "edm":
        args.update(precond="edm", sigma_data=float(cfg["edm"]["sigma_data"]),
                    noise_embed_scale=float(cfg["edm"]["noise_embed_scale"]))
    else:
        vp = cfg["vp"]
        args.update(precond="vp", parameterization=vp["parameterization"], time=vp["time"],
                    ddpm=ddpm_arguments(vp["scheduler"]) if vp["time"] == "discrete" else None)
        if vp.get("converted_from"):  # a converted PD student: the scheduler applies the same exact map
            args["converted_from"] = vp["converted_from"]
    return args


def write_diffusers_folder(model: Denoiser, folder: Path, src, quality: list) -> None:
    import diffusers

    from ..pipeline import PIPELINE_FILE, BDenseScheduler, share_readable
    from .card import model_card
    folder.mkdir(parents=True, exist_ok=True)
    model.net.save_pretrained(str(folder / "unet"), safe_serialization=True)
    sched = scheduler_config(model)
    BDenseScheduler(**sched).save_pretrained(str(folder / "scheduler"))
    code = Path(__file__).resolve().parent.parent / "pipeline.py"
    shutil.copyfile(code, folder / PIPELINE_FILE)
    shutil.copyfile(code, folder / "scheduler" / PIPELINE_FILE)  # diffusers loads a custom component from its folder
    stem = PIPELINE_FILE[:-3]
    index = {"_class_name": [stem, "BDensePipeline"], "_diffusers_version": diffusers.__version__,
             "scheduler": [stem, "BDenseScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    _write_json(folder / "model_index.json", index)
    _write_json(folder / "bdense.json", model.config)
    (folder / "README.md").write_text(model_card(model, sched, src, quality))
    share_readable(str(folder))


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_metrics(path, digest: str) -> dict:
    """A JSON written by `bdense fid calc --out` or `bdense agreement --out`, for the model card; one that
    measured another model (its recorded model_digest is not `digest`, the exported file's) is refused."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        raise BdenseError(f"--metrics {p} is not a readable JSON file; pass the --out file of bdense fid calc or "
                          f"bdense agreement") from None
    if not isinstance(doc, dict) or ("fid" not in doc and "results" not in doc):
        raise BdenseError(f"--metrics {p} holds neither an FID ('fid') nor agreement results ('results'); pass the "
                          f"--out file of bdense fid calc or bdense agreement")
    if doc.get("model_digest") not in (None, digest):
        raise BdenseError(f"--metrics {p} measured {doc.get('model')} (sha256 prefix {doc['model_digest']}), not this "
                          f"model ({digest}); measure this model (bdense fid calc --model / agreement --model) or drop "
                          f"--metrics {p}")
    return dict(doc, file=p.name)
