"""GPU vs CPU agreement: a teacher trajectory and one SFD distillation step, same weights and seeds.

Why: every number from the GPU machine (training curves, FIDs, timings) is only worth having if the GPU runs
the same computation as the CPU-tested code. A teacher with fixed random weights (seeded init on the CPU, so
identical everywhere; a parameter checksum proves it) gives, per configuration,
  * the SFD NFE 2 teacher trajectory (dpmpp_3m, 13 states) for fixed noise seeds, and
  * one SFD training iteration (K = 1 and K = 4) through the real Trainer: its per-interval, per-branch losses
    (the second interval's loss already depends on the first interval's Adam update).
Configurations: CPU fp32 (the reference, computed in a child process running alongside, since accelerate fixes
the device per process), and in this process CUDA fp32 with torch's defaults (cuDNN may use TF32), CUDA fp32
strict (TF32 off), CUDA bf16 autocast (the Trainer resets accelerate's precision per run; checked below).
Prints relative errors against the CPU reference and a verdict per row.

    python3 benchmarks/gpu_consistency.py                      # on a GPU machine
    .venv/bin/python benchmarks/gpu_consistency.py --dry-run   # CPU only: fp32 again and bf16, tests the script
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import autocast, make_teacher, parser, setup, sfd_trainer, table

# name -> (device, precision, TF32 on?, tolerance on the relative errors); None: leave torch's default
CONFIGS = {"cuda fp32 (defaults)": ("cuda", "fp32", None, 1e-2),
           "cuda fp32 strict (no TF32)": ("cuda", "fp32", False, 1e-4), "cuda bf16": ("cuda", "bf16", None, 5e-2)}
DRY = {"cpu fp32 again": ("cpu", "fp32", None, 1e-6), "cpu bf16": ("cpu", "bf16", None, 5e-2)}


def compute(args, device, precision, tmp) -> dict:
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.trajectories import teacher_trajectories
    args.device, args.precision = device, precision
    teacher = make_teacher(args)  # seeded init on the CPU: the same weights in every process
    checksum = float(sum(p.double().sum() for p in teacher.parameters()))
    teacher.to(device)
    traj, _ = teacher_trajectories(teacher, SFDPlan(nfe=2), list(range(args.batch)), device,
                                   autocast=autocast(device, precision))
    losses, mp = {}, set()
    for k in (1, 4):
        task, tr = sfd_trainer(teacher, k, args, tmp, None, steps=1)
        # float(): on CUDA the Trainer's fast path (fused Adam, no host syncs) returns device scalars
        losses.update({f"K{k} {n}": float(v) for n, v in task.train_step(tr, 0).items() if n.startswith("loss/")})
        mp.add(f"{tr.device.type}/{tr.acc.mixed_precision}{'/fast' if tr.fast else ''}")
    return {"traj": traj.cpu(), "losses": losses, "checksum": checksum, "ran": ",".join(sorted(mp))}


def set_tf32(flag, default) -> str:
    if not torch.cuda.is_available():
        return "-"
    on = default if flag is None else (flag, flag)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = on
        return f"cudnn {on[0]}, matmul {on[1]}"
    except RuntimeError as e:  # torch refuses legacy flags after the new fp32_precision API was used
        return f"not set: {str(e)[:60]}"


def main() -> None:
    p = parser(__doc__, batch=64, preset="digits", resolution=8)
    p.add_argument("--dry-run", action="store_true", help="CPU only (fp32 again, bf16): exercise the script")
    p.add_argument("--child-save", default="", help="internal: compute the CPU fp32 reference into this file")
    args = p.parse_args()
    setup(args)
    if args.child_save:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(compute(args, "cpu", "fp32", tmp), args.child_save)
        return
    configs = DRY if args.dry_run else CONFIGS
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run to test the script on CPU")
    print(f"# gpu_consistency.py: torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; teacher preset {args.preset} "
          f"{args.channels}x{args.resolution}x{args.resolution} (seeded random weights), batch {args.batch}, "
          f"SFD NFE 2, dpmpp_3m", flush=True)
    default_tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    out, errors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        ref_file = str(Path(tmp) / "cpu.pt")
        child = subprocess.Popen([sys.executable, sys.argv[0], "--preset", args.preset, "--resolution",
                                  str(args.resolution), "--channels", str(args.channels), "--batch", str(args.batch),
                                  "--threads", str(args.threads), "--child-save", ref_file],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, (dev, prec, tf32, _) in configs.items():
            try:
                state = set_tf32(tf32, default_tf32)
                out[name] = compute(args, dev, prec, tmp)
                print(f"  {name}: ran as {out[name]['ran']}, TF32 {state}", flush=True)
            except Exception as e:  # one failing configuration must not hide the others
                errors[name] = repr(e)[-800:]
                print(f"  {name}: FAILED: {errors[name]}", flush=True)
        log, _ = child.communicate()
        if child.returncode:
            sys.exit(f"the CPU reference failed; nothing to compare:\n{log[-3000:]}")
        ref = torch.load(ref_file)
    print(f"  cpu fp32 (reference, child process): ran as {ref['ran']}", flush=True)
    rows, ok_all = [], True
    for name, (_, prec, _, tol) in configs.items():
        if name not in out:
            rows.append([name] + ["-"] * 6 + ["FAILED"])
            ok_all = False
            continue
        o = out[name]
        d = o["traj"] - ref["traj"]
        per_state = d.flatten(1).norm(dim=1) / ref["traj"].flatten(1).norm(dim=1)
        lrel = max(abs(o["losses"][k] - v) / abs(v) for k, v in ref["losses"].items())
        same_w = o["checksum"] == ref["checksum"]
        right_mp = o["ran"].replace("/fast", "").endswith({"fp32": "no", "bf16": "bf16"}[prec])
        ok = same_w and right_mp and float(per_state.max()) <= tol and lrel <= tol
        ok_all &= ok
        rows.append([name, f"{float(per_state.max()):.2e}", f"{float(per_state[-1]):.2e}",
                     f"{float(d.abs().max()):.2e}", f"{lrel:.2e}", "yes" if same_w else "NO", f"{tol:g}",
                     "ok" if ok else ("CHECK" if right_mp else "CHECK (precision not applied)")])
    table("Agreement with CPU fp32 (relative L2 errors; trajectory: worst of its 13 states; loss: worst over "
          "intervals, branches, K=1 and K=4)",
          ["config", "trajectory (worst state)", "final state", "max abs", "SFD step loss", "same weights",
           "tolerance", "verdict"], rows)
    print("reference losses (CPU fp32): " + ", ".join(f"{k}={v:.5g}" for k, v in ref["losses"].items()))
    print("ALL AGREE" if ok_all else "SOME CONFIGS DISAGREE BEYOND TOLERANCE (see CHECK/FAILED rows)")


if __name__ == "__main__":
    main()
