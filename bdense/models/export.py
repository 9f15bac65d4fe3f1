"""Export: strip a student to its endpoint branch, as a bdense file or a diffusers UNet2DModel directory."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import BdenseError
from .branches import export_endpoint
from .checkpoint import load_model, save_model


def export_model(src: str | Path, out: str | Path, fmt: str = "bdense") -> Path:
    model = load_model(src)
    single = export_endpoint(model) if model.branches > 1 else model
    meta = dict(model.config.get("meta", {}), exported_from=str(src), branches_before_export=model.branches)
    single.config["meta"] = meta
    out = Path(out)
    if fmt == "bdense":
        return save_model(out, single)
    if fmt == "diffusers":
        if out.exists() and any(out.iterdir()):
            raise BdenseError(f"{out} exists and is not empty; choose a new directory for --format diffusers")
        tmp = out.with_name(out.name + ".partial")
        single.net.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "bdense.json").write_text(json.dumps(single.config, indent=2))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
        return out
    raise BdenseError(f"unknown export --format '{fmt}'; use bdense or diffusers")
