"""Every command of the README's Examples runs as pasted, in order, at tiny scale: the only changes are flags that
shrink the work (appended, so they win) and smaller seed ranges. A command added to the Examples without a rule
here fails the test, so the README cannot again show a command that fails when pasted."""
import re
import shlex
from pathlib import Path

from test_export import cli  # noqa: F401 (the fixture)

README = Path(__file__).resolve().parent.parent / "README.md"
FEATURES = "runs/features-digits.safetensors"
SFD_RUN = ["--trajectories", "16", "--batch", "8"]
EVAL = ["--eval-seeds", "8", "--eval-points", "1.0", "--features", FEATURES]
# subcommand -> flags appended (the last value of a repeated flag wins in typer)
TINY = {
    "train-teacher": ["--preset", "tiny", "--steps", "3", "--batch", "8"],
    "sample": [],
    "distill": SFD_RUN,
    "export": [],
    "agreement": [],
    "train-features": ["--steps", "20"],
    "fid": [],
    "compare": SFD_RUN + EVAL,
    "teachers": [],
    "trajectories": ["--batch", "8"],
    "tune": ["--trial-trajectories", "16", "--tune-seeds", "4", "--final-seeds", "1", *SFD_RUN, *EVAL],
}
PD_RUN = ["--start-steps", "4", "--end-steps", "2", "--round-iters", "2", "--batch", "8"]
SMALLER = {"--seeds": {"0-63": "0-3", "0-255": "0-7", "0-1999": "0-15", "3": "2"}, "--count": {"6400": "16"},
           "--trials": {"12": "2"}, "--nfe": {"2,3": "2"}}


def examples() -> list[list[str]]:
    """The commands of the README's Examples block: continuation lines joined, comments dropped."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("### Examples"):], re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def tiny(args: list[str]) -> list[str]:
    out = [SMALLER.get(prev, {}).get(a, a) for prev, a in zip([None] + args, args)]
    extra = PD_RUN if args[0] == "distill" and "pd" in args else TINY[args[0]]
    return out + extra


def test_every_readme_example_runs_as_pasted(tmp_path, monkeypatch, cli):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BDENSE_TEACHERS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    commands = examples()
    assert len(commands) >= 20 and all(c[0] == "bdense" for c in commands), commands
    unknown = {c[1] for c in commands} - set(TINY)
    assert not unknown, f"README example commands without a tiny-scale rule here: {unknown}"
    for c in commands:
        code, out = cli(tiny(c[1:]))
        assert code == 0, f"{shlex.join(c)}\n{out}"
    assert Path("runs/sfd-k4/model.safetensors").is_file() and len(list(Path("samples-k4").glob("*.png"))) == 16


def test_every_relative_link_in_the_docs_resolves():
    """README, docs/, the teacher cards and benchmarks/: a link or image to a file that is not committed is a defect
    (a study report copied without its figures, a renamed page)."""
    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md"] + [p for d in ("docs", "bdense/teachers", "benchmarks") for p in (root / d).glob("*.md")]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            target = target.split("#")[0]
            if target and not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert not broken, broken
