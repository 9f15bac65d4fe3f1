"""GPU vs CPU agreement: a teacher trajectory and one SFD distillation step, same weights and seeds.

Why: every number from the GPU machine (training curves, FIDs, timings) is only worth having if the GPU runs
the same computation as the CPU-tested code. This builds a teacher with fixed random weights (seeded init on
the CPU, so identical in every process), then in a fresh process per configuration computes
  * the SFD NFE 2 teacher trajectory (dpmpp_3m, 13 states) for fixed noise seeds, and
  * one SFD training iteration (K = 1 and K = 4) through the real Trainer: its per-interval, per-branch losses
    (the second interval's loss already depends on the first interval's Adam update).
Configurations: CPU fp32 (the reference), CUDA fp32 with torch defaults (cuDNN may use TF32), CUDA fp32 strict
(TF32 off), CUDA bf16 autocast. A fresh process each, because accelerate fixes device and precision per
process. Prints relative errors against the CPU reference and a verdict per row.

    python3 benchmarks/gpu_consistency.py                      # on a GPU machine
    .venv/bin/python benchmarks/gpu_consistency.py --dry-run   # CPU only: fp32 vs bf16, to test the script
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from common import child_json, make_teacher, parser, setup, table

# (device, precision, tf32) -> tolerance on the relative L2 error of the trajectory and the loss
CONFIGS = {"cpu fp32": ("cpu", "fp32", None, 0.0), "cuda fp32 (defaults)": ("cuda", "fp32", None, 1e-2),
           "cuda fp32 strict (no TF32)": ("cuda", "fp32", False, 1e-4), "cuda bf16": ("cuda", "bf16", None, 5e-2)}
DRY = {"cpu fp32": ("cpu", "fp32", None, 0.0), "cpu fp32 again": ("cpu", "fp32", None, 1e-6),
       "cpu bf16": ("cpu", "bf16", None, 5e-2)}


def child(args) -> None:
    from bdense.distill.plan import SFDPlan
    from bdense.distill.trajectories import teacher_trajectories
    from common import autocast, sfd_trainer
    device, precision, tf32 = args.child.split(":")
    if tf32 != "None" and device == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32 == "True"
    args.device, args.precision = device, precision
    teacher = make_teacher(args)  # seeded init on the CPU: the same weights in every process
    checksum = float(sum(p.double().sum() for p in teacher.parameters()))
    teacher.to(device)
    traj, _ = teacher_trajectories(teacher, SFDPlan(nfe=2), list(range(args.batch)), device,
                                   autocast=autocast(device, precision))
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, 4):
            task, tr = sfd_trainer(teacher, k, args, tmp, None, steps=1)
            m = task.train_step(tr, 0)
            losses.update({f"K{k} {n}": v for n, v in m.items() if n.startswith("loss/")})
    try:
        tf = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) if device == "cuda" else None
    except RuntimeError as e:  # torch refuses to read legacy flags after the new fp32_precision API was used
        tf = str(e)[:80]
    torch.save({"traj": traj.cpu(), "losses": losses}, args.save)
    print(json.dumps({"checksum": checksum, "tf32": tf, "device": str(tr.device)}))


def main() -> None:
    p = parser(__doc__, batch=64, preset="digits", resolution=8)
    p.add_argument("--dry-run", action="store_true", help="CPU only (fp32 twice, bf16): exercise the script")
    p.add_argument("--child", default="")
    p.add_argument("--save", default="")
    args = p.parse_args()
    setup(args)
    if args.child:
        return child(args)
    configs = DRY if args.dry_run else CONFIGS
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run to test the script on CPU")
    print(f"# gpu_consistency.py: torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; teacher preset {args.preset} "
          f"{args.channels}x{args.resolution}x{args.resolution} (seeded random weights), batch {args.batch}, "
          f"SFD NFE 2, dpmpp_3m", flush=True)
    out, info = {}, {}
    passthrough = ["--preset", args.preset, "--resolution", str(args.resolution), "--channels", str(args.channels),
                   "--batch", str(args.batch), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (dev, prec, tf32, _) in configs.items():
            f = str(Path(tmp) / f"{len(out)}.pt")
            info[name] = child_json([sys.argv[0], *passthrough, "--child", f"{dev}:{prec}:{tf32}", "--save", f])
            out[name] = torch.load(f)
            print(f"  {name}: done on {info[name]['device']}, TF32 (cudnn, matmul) {info[name]['tf32']}", flush=True)
    ref = out["cpu fp32"]
    rows, ok_all = [], True
    for name, (_, _, _, tol) in list(configs.items())[1:]:
        o = out[name]
        d = o["traj"] - ref["traj"]
        per_state = d.flatten(1).norm(dim=1) / ref["traj"].flatten(1).norm(dim=1)
        rel, rel_last = float(per_state.max()), float(per_state[-1])
        lrel = max(abs(o["losses"][k] - v) / abs(v) for k, v in ref["losses"].items())
        same_w = info[name]["checksum"] == info["cpu fp32"]["checksum"]
        ok = same_w and rel <= tol and lrel <= tol
        ok_all &= ok
        rows.append([name, f"{rel:.2e}", f"{rel_last:.2e}", f"{float(d.abs().max()):.2e}", f"{lrel:.2e}",
                     "yes" if same_w else "NO", f"{tol:g}", "ok" if ok else "CHECK"])
    table("Agreement with CPU fp32 (relative L2 errors; trajectory: worst of its 13 states; loss: worst over "
          "intervals, branches, K=1 and K=4)",
          ["config", "trajectory (worst state)", "final state", "max abs", "SFD step loss", "same weights", "tolerance",
           "verdict"], rows)
    print("reference losses (CPU fp32): " + ", ".join(f"{k}={v:.5g}" for k, v in ref["losses"].items()))
    print("ALL AGREE" if ok_all else "SOME CONFIGS DISAGREE BEYOND TOLERANCE (see CHECK rows)")


if __name__ == "__main__":
    main()
