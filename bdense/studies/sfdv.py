"""SFD-v in comparisons: a setting such as 'v-bdense:4:uniform:2-5', its training run, its student at each NFE.

An SFD-v setting trains one student for all its counts; it is reported at each NFE n (sampled with count n)
against the per-NFE baseline trained with the same number of trajectories at n. With the balanced draw every
count gets exactly per_nfe trajectories, and count n's trajectories are the baseline's own pool in the baseline's
order (bdense/distill/sfd/sfdv.py), so the per-NFE caches serve both and the pairing by training seed is exact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..distill.sfd.counts import parse_counts
from ..errors import BdenseError

SFDV_KEYS = {"targets": str, "draw": str, "heads": str}


@dataclass(frozen=True)
class SFDvSetting:
    name: str
    branches: int
    counts: tuple
    weights: str | None = None  # None: the distiller's default
    targets: str | None = None
    draw: str = "balanced"
    heads: str | None = None  # branch_heads: shared | block (bdense/models/denoisers.py)

    @classmethod
    def parse(cls, spec: str) -> "SFDvSetting":
        """'NAME:K[:WEIGHTS]:A-B[:targets=MODE][:draw=iid][:heads=block]', or the counts as nfe=2,3,5 (a list needs
        the key)."""
        fields, extra = spec.split(":"), {}
        counts = None
        while len(fields) > 2 and "=" in fields[-1]:
            key, _, value = fields.pop().partition("=")
            if key == "nfe":
                counts = value
            elif key in SFDV_KEYS:
                extra[key] = value
            else:
                raise BdenseError(f"SFD-v setting '{spec}': unknown option '{key}'; use nfe, targets, draw or heads")
        if counts is None and len(fields) > 2 and re.fullmatch(r"\d+-\d+", fields[-1]):
            counts = fields.pop()
        if counts is None:
            raise BdenseError(f"SFD-v setting '{spec}' names no NFE range; end it with A-B or nfe=2,3,5, "
                              f"e.g. v-bdense:4:uniform:2-5")
        try:
            k = int(fields[1])
        except (IndexError, ValueError):
            raise BdenseError(f"cannot read SFD-v setting '{spec}'; write NAME:K[:WEIGHTS]:A-B, "
                              f"e.g. v-bdense:4:uniform:2-5") from None
        s = cls(fields[0], k, parse_counts(counts), ":".join(fields[2:]) or None, **extra)
        if len(s.counts) < 2:
            raise BdenseError(f"SFD-v setting '{spec}' has one NFE; that is a per-NFE setting (NAME:K[:WEIGHTS])")
        from ..distill.sfd.counts import DRAWS
        from ..distill.sfd.targets import check_mode
        from ..distill.weights import parse_weights
        parse_weights(s.weights, s.branches)
        if s.targets is not None:
            check_mode(s.targets)
        from ..models.denoisers import HEAD_MODES
        if s.heads is not None and s.heads not in HEAD_MODES:
            raise BdenseError(f"SFD-v setting '{spec}': heads must be {' or '.join(HEAD_MODES)}")
        if s.draw not in DRAWS:
            raise BdenseError(f"SFD-v setting '{spec}': draw must be {' or '.join(DRAWS)}")
        return s

    def distill_options(self, per_nfe: int) -> dict:
        """distill_sfd keywords: the counts, K, weights and a total budget of per_nfe trajectories per count."""
        kw = {"nfe": self.counts, "branches": self.branches, "branch_weights": self.weights, "nfe_draw": self.draw,
              "trajectories": per_nfe * len(self.counts)}
        if self.targets is not None:
            kw["branch_targets"] = self.targets
        if self.heads is not None:
            kw["branch_heads"] = self.heads
        return kw


def is_sfdv_setting(spec: str) -> bool:
    """Whether a --setting string names an SFD-v setting (an NFE range or nfe=... field) rather than a per-NFE one."""
    fields = spec.split(":")
    return len(fields) > 2 and any(f.startswith("nfe=") or re.fullmatch(r"\d+-\d+", f) for f in fields[2:])


def train_sfdv(teacher: str, run_dir: str | Path, setting: SFDvSetting, per_nfe: int, seed: int,
               cache_dir: str | Path | None = None, **kw) -> Path:
    """Train one SFD-v run (or reuse the finished one if it was made with the same options). cache_dir holds
    nfeN/ per count (a comparison's per-NFE caches); kw: further distill_sfd keywords (batch, lr, device, ...)."""
    from ..distill.sfd.run import distill_sfd
    d = Path(run_dir)
    opts = dict(setting.distill_options(per_nfe), seed=seed, **kw)
    if (d / "model.safetensors").exists():
        from ..hosts.common import check_reusable
        check_reusable(d, distill_sfd(teacher, str(d), dry_run=True, **opts)["options"])
        return d
    resume = (d / "checkpoints").exists() and any((d / "checkpoints").iterdir())
    distill_sfd(teacher, str(d), resume=resume, trajectory_cache=str(cache_dir) if cache_dir else None, **opts)
    return d


def recipe_at(student, nfe: int):
    """The recipe that samples a student at nfe: an SFD-v student's own grid at that count (sampled with count nfe);
    a per-NFE student only at its own NFE."""
    from ..sampling.sample import model_recipe
    recipe = model_recipe(student)
    if not getattr(student, "nfe_counts", ()) and recipe.nfe != nfe:
        raise BdenseError(f"this student was distilled for NFE {recipe.nfe}, not {nfe}")
    return recipe.with_overrides(nfe=nfe)


def evaluate_at_nfes(student, nfes, measure) -> dict:
    """{nfe: measure(student, recipe)} for every NFE (measure: e.g. Comparison.measure with its references bound)."""
    return {n: measure(student, recipe_at(student, n)) for n in nfes}
