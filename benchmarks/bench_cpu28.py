"""CPU speed of the 28x28 presets: eager vs torch.compile (inductor C++), 1 vs 2 threads, channels_last, batch size.

Why (issue 16, item 3): a CPU-sized 28x28 comparison with a good teacher should fit in about two hours on this
2-core machine; this measures what each knob gives, side by side in one process (interleaved rounds, order
reversed every other round, medians and medians of per-round ratios against the eager 1-thread baseline), and
whether the knob changes the numbers (max |difference| of the output / of the updated weights against the
baseline: only a bit-identical knob may become a CPU default without changing every CPU result).

Measured per configuration, on a model of the preset with fixed random weights:
  * train step: EDM denoiser forward at batch --batch, MSE, backward, Adam step (what teacher training and an
    SFD student interval do); every configuration starts each round from the same weights and optimizer state;
  * rollout forward: no-grad denoiser forward at batch --rollout-batch (what teacher trajectories and sampling do),
    reported as images/s; also at the other --rollout-batches in eager 1-thread, to see what batch size pays.
torch.compile: compile time (the first call, reported separately) and steady time. The C++ kernels are compiled for
the thread count current at compile time, so the 2-thread compiled model is compiled separately (--compile-threads).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cpu28.py --preset mnist --repeats 5
"""
from __future__ import annotations

import copy
import time

import torch

from common import describe_machine, med, paired_ratio, parser, spread, table


def make_model(args):
    from bdense.models.factory import new_model
    torch.manual_seed(0)
    return new_model("edm", args.channels, args.resolution, preset=args.preset)


def batch_data(n, args, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, args.channels, args.resolution, args.resolution, generator=g) * 2 - 1
    sigma = (torch.randn(n, generator=g) * 1.2 - 1.2).exp()
    noise = torch.randn(x0.shape, generator=g)
    return x0, sigma, noise


class Config:
    """One way of running the model: its thread count, memory format and (compiled or eager) module."""

    def __init__(self, name, base, threads, channels_last=False, compiled=False, args=None):
        self.name, self.threads, self.channels_last, self.compiled = name, threads, channels_last, compiled
        self.train_model = copy.deepcopy(base).train()
        self.eval_model = copy.deepcopy(base).eval()
        for m in (self.train_model, self.eval_model):
            if channels_last:
                m.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.train_model.parameters(), lr=1e-4)
        self.start = ({k: v.clone() for k, v in base.state_dict().items()})
        self.compile_s = {}
        if compiled:
            with torch.no_grad():  # the compile happens on the first call of each; time it separately
                torch.set_num_threads(threads)
                self.train_model.net.compile(dynamic=False)
                self.eval_model.net.compile(dynamic=False)

    def _input(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, data):
        torch.set_num_threads(self.threads)
        x0, sigma, noise = data
        self.train_model.load_state_dict(self.start)  # every round from the same weights
        self.opt.state.clear()
        d = self.train_model(self._input(x0 + sigma.view(-1, 1, 1, 1) * noise), sigma)[:, -1]
        loss = ((d - x0) ** 2).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    @torch.no_grad()
    def forward(self, x, sigma):
        torch.set_num_threads(self.threads)
        return self.eval_model(self._input(x), sigma)

    def weights(self):
        return self.train_model.state_dict()


def main() -> None:
    p = parser(__doc__, batch=64, preset="mnist", resolution=28, repeats=5)
    p.add_argument("--rollout-batch", type=int, default=256)
    p.add_argument("--rollout-batches", default="64,128,256,512", help="eager 1-thread forward at these batch sizes")
    p.add_argument("--configs", default="eager-1t,eager-2t,cl-1t,cl-2t,compiled-1t,compiled-2t")
    args = p.parse_args()
    torch.set_num_threads(1)
    describe_machine(args)
    base = make_model(args)
    print(f"# model: {sum(p.numel() for p in base.parameters()) / 1e6:.2f}M parameters", flush=True)
    specs = {"eager-1t": (1, False, False), "eager-2t": (2, False, False), "cl-1t": (1, True, False),
             "cl-2t": (2, True, False), "compiled-1t": (1, False, True), "compiled-2t": (2, False, True),
             "compiled-cl-1t": (1, True, True)}
    names = [c for c in args.configs.split(",") if c]
    train_data = batch_data(args.batch, args, 1)
    xr, sr, nr = batch_data(args.rollout_batch, args, 2)
    roll = (xr + sr.view(-1, 1, 1, 1) * nr, sr)
    configs = {}
    for n in names:
        th, cl, comp = specs[n]
        t0 = time.perf_counter()
        c = Config(n, base, th, cl, comp, args)
        if comp:  # first calls = compile (+ one run); reported apart from the steady state
            t1 = time.perf_counter()
            c.train_step(train_data)
            c.compile_s["train"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            c.forward(*roll)
            c.compile_s["forward"] = time.perf_counter() - t1
            print(f"  {n}: compile + first call: train step {c.compile_s['train']:.1f} s, "
                  f"forward {c.compile_s['forward']:.1f} s (setup {t1 - t0:.1f} s)", flush=True)
        configs[n] = c

    # numerics against the eager 1-thread baseline (one train step from the same weights, one forward)
    ref = configs[names[0]]
    ref_loss = ref.train_step(train_data)
    ref_w = {k: v.clone() for k, v in ref.weights().items()}
    ref_out = ref.forward(*roll)
    diffs = {}
    for n, c in configs.items():
        loss = c.train_step(train_data)
        w = c.weights()
        wd = max(float((w[k].float() - ref_w[k].float()).abs().max()) for k in ref_w)
        od = float((c.forward(*roll) - ref_out).abs().max())
        diffs[n] = (float((loss - ref_loss).abs()), wd, od)

    # timing: interleaved rounds
    tr_fns = {n: (lambda c=c: c.train_step(train_data)) for n, c in configs.items()}
    fw_fns = {n: (lambda c=c: c.forward(*roll)) for n, c in configs.items()}
    from common import interleaved
    tw, tc = interleaved(tr_fns, "cpu", args.repeats, args.warmup)
    fw, fc = interleaved(fw_fns, "cpu", args.repeats, args.warmup)
    rows = []
    for n, c in configs.items():
        ld, wd, od = diffs[n]
        comp = f"{c.compile_s['train']:.0f} / {c.compile_s['forward']:.0f}" if c.compile_s else "-"
        rows.append([n, f"{1e3 * med(tw[n]):.0f}", spread(tw[n]), f"{paired_ratio(tw[n], tw[names[0]]):.3f}",
                     f"{paired_ratio(tc[n], tc[names[0]]):.3f}",
                     f"{1e3 * med(fw[n]):.0f}", spread(fw[n]), f"{paired_ratio(fw[n], fw[names[0]]):.3f}",
                     f"{args.rollout_batch / med(fw[n]):.0f}", comp,
                     "identical" if wd == 0 and od == 0 else f"{wd:.1e} / {od:.1e}"])
    table(f"28x28 on CPU, preset {args.preset}: train step at batch {args.batch}, rollout forward at batch "
          f"{args.rollout_batch} (medians of {args.repeats} interleaved rounds; ratios: paired, vs {names[0]})",
          ["config", "train ms", "spread", "train ratio (wall)", "train ratio (CPU time)", "forward ms", "spread",
           "forward ratio", "forward img/s", "compile s (train / forward)",
           f"max |diff| vs {names[0]} (weights after 1 step / forward)"], rows)

    # batch size: eager 1-thread forward throughput
    bs = [int(v) for v in args.rollout_batches.split(",") if v]
    fns = {}
    for b in bs:
        xb, sb, nb = batch_data(b, args, 3)
        fns[b] = (lambda x=xb + sb.view(-1, 1, 1, 1) * nb, s=sb: ref.forward(x, s))
    bw, _ = interleaved(fns, "cpu", args.repeats, args.warmup)
    table(f"Rollout forward throughput vs batch size ({names[0]})", ["batch", "ms", "spread", "img/s"],
          [[b, f"{1e3 * med(bw[b]):.0f}", spread(bw[b]), f"{b / med(bw[b]):.0f}"] for b in bs])


if __name__ == "__main__":
    main()
