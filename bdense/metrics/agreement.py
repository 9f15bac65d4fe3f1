"""Teacher agreement: RMSE and PSNR (data range 2) between a student's and its teacher's samples from the same seeds."""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch

from ..errors import BdenseError
from ..sampling.recipe import Recipe
from ..sampling.sample import generate, model_recipe


def image_agreement(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """rmse and psnr (global MSE, range 2) over all pixels of all (a, b) image pairs, plus the per-image PSNR mean."""
    sse, count, n, psnrs = 0.0, 0, 0, []
    for a, b in pairs:
        d = (a.double() - b.double()).flatten(1)
        sse += float(d.pow(2).sum())
        count += d.numel()
        n += len(d)
        psnrs += [_psnr(float(m)) for m in d.pow(2).mean(1)]
    if n == 0:
        raise BdenseError("no seeds to compare; pass --seeds, e.g. 0-255")
    mse = sse / count
    finite = [p for p in psnrs if math.isfinite(p)]
    return dict(rmse=math.sqrt(mse), psnr=_psnr(mse), psnr_per_image_mean=sum(psnrs) / n,
                identical_images=n - len(finite), n=n)


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(4.0 / mse)


def _images(model, seeds, recipe: Recipe, batch_size, device) -> Iterator[torch.Tensor]:
    for _, im, _ in generate(model, seeds, recipe, batch_size=batch_size, device=device):
        yield im


def agreement_for_recipe(teacher, recipe_a: Recipe, recipe_b: Recipe, seeds: list[int], batch_size: int = 256,
                         device="cpu", student=None) -> dict:
    """Compare `student` (default: the teacher) under recipe_a with the teacher under recipe_b, seed by seed."""
    if recipe_a.sigma_max != recipe_b.sigma_max:
        raise BdenseError(f"recipes start at different sigma_max ({recipe_a.sigma_max} vs {recipe_b.sigma_max}), so "
                          f"x_T differs; set the same sigma_max on both")
    if student is not None:
        check_same_images(student, teacher)
    a = _images(student if student is not None else teacher, seeds, recipe_a, batch_size, device)
    b = _images(teacher, seeds, recipe_b, batch_size, device)
    res = image_agreement(zip(a, b))
    return dict(res, recipe_a=recipe_a.to_dict(), recipe_b=recipe_b.to_dict())


def sfd_plan(student):
    """The SFDPlan an SFD student was distilled with, rebuilt from its meta; None for other students."""
    from ..distill.sfd.plan import SFDPlan, recorded_teacher
    meta = student.config.get("meta", {})
    dist, samp = meta.get("distill") or {}, meta.get("sampling") or {}
    if dist.get("method") != "sfd" or not samp:
        return None
    return SFDPlan(nfe=samp["nfe"], branches=dist.get("branches", 1), substeps=dist["teacher_substeps"],
                   afs=samp["afs"], sigma_min=samp["sigma_min"], sigma_max=samp["sigma_max"], rho=samp["rho"],
                   **recorded_teacher(dist))


def _distill_reference(teacher, plan, seeds, batch_size, device) -> Iterator[torch.Tensor]:
    from ..distill.sfd.trajectories import teacher_trajectories
    for i in range(0, len(seeds), batch_size):
        traj, _ = teacher_trajectories(teacher, plan, seeds[i:i + batch_size], device)
        yield traj[-1].clamp(-1, 1).cpu()


def check_same_images(student, teacher) -> None:
    """Seed-paired agreement needs the same x_T: the same channels, resolution and classes on both sides."""
    shape = lambda m: (m.channels, m.resolution, m.num_classes)  # noqa: E731
    if shape(student) != shape(teacher):
        raise BdenseError(f"the student makes {student.channels}x{student.resolution}px images"
                          f"{f' of {student.num_classes} classes' if student.num_classes else ''}, the teacher "
                          f"{teacher.channels}x{teacher.resolution}px"
                          f"{f' of {teacher.num_classes} classes' if teacher.num_classes else ''}; pass --teacher the "
                          f"model it was distilled from")


def agreement(student, teacher, seeds: list[int], reference: str = "distill", batch_size: int = 256, device="cpu",
              teacher_recipe: Recipe | None = None) -> dict:
    """dict(rmse, psnr, n, reference, ...) of the student's samples (its own recipe) against a teacher reference.

    Both start from the same x_T = sigma_max * n(seed) (same noise stream, the student's sigma_max). References:
      'distill': the teacher with the solver and refined grid an SFD student was trained towards, ending at the
                 student's sigma_min (e.g. 0.006): the distillation error itself;
      'teacher': teacher_recipe (default: the teacher's own, Heun 35 NFE ending at sigma 0). The student stops at
                 sigma_min, so a residual of order sigma_min (<= 0.006 RMSE) is included in this number.
    Images are compared after clamping to [-1, 1], as samples are written.
    """
    check_same_images(student, teacher)
    srec = model_recipe(student)
    if reference == "distill":
        plan = sfd_plan(student)
        if plan is None:
            raise BdenseError("reference 'distill' needs an SFD student (meta distill.method == sfd); use reference 'teacher'")
        if (plan.sigma_max, plan.sigma_min) != (srec.sigma_max, srec.sigma_min):
            raise BdenseError("the student's recipe no longer matches its distillation grid; compare with reference 'teacher'")
        ref = _distill_reference(teacher, plan, seeds, batch_size, device)
        desc = dict(reference="distill", teacher_solver=plan.teacher_solver, teacher_nfe=plan.teacher_nfe(),
                    grid=[round(float(s), 6) for s in plan.grids()[1]])
    elif reference == "teacher":
        trec = (teacher_recipe or model_recipe(teacher)).with_overrides(sigma_max=srec.sigma_max)
        ref = _images(teacher, seeds, trec, batch_size, device)
        desc = dict(reference="teacher", teacher_recipe=trec.to_dict())
    else:
        raise BdenseError(f"unknown reference '{reference}'; use distill or teacher")
    res = image_agreement(zip(_images(student, seeds, srec, batch_size, device), ref))
    return dict(res, **desc, student_recipe=srec.to_dict())
