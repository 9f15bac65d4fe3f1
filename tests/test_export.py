"""Exports that diffusers loads in one line and that reproduce `bdense sample` bit for bit; sampling outputs for
the field's FID tools; help that teaches. The README's diffusers lines are run here as written."""
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from bdense.models.checkpoint import load_model, save_model
from bdense.sampling.sample import model_recipe, sample_uint8

README = Path(__file__).resolve().parent.parent / "README.md"
SEEDS = list(range(16))


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `bdense ARGS` in-process through the entry point (bdense.cli.main); returns (exit code, output)."""
    from bdense.cli import main

    def run(args):
        capsys.readouterr()
        monkeypatch.setattr("sys.argv", ["bdense", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        cap = capsys.readouterr()
        return code, cap.out + "".join(x + "\n" for x in cap.err.splitlines() if x.startswith("error"))
    return run


def _readme_block(lang: str, after: str) -> str:
    text = README.read_text()
    start = text.index(after)
    return re.search(rf"```{lang}\n(.*?)```", text[start:], re.S).group(1)


def _edm_student(tmp_path) -> Path:
    """An EDM K=4 student whose branches differ (so exporting the wrong one would show), with SFD's recipe."""
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.run import sfd_student_recipe
    from bdense.models.branches import widen
    from bdense.models.factory import new_model
    torch.manual_seed(0)
    student = widen(new_model("edm", 1, 8, preset="tiny").eval(), 4)
    with torch.no_grad():
        student.net.conv_out.weight.add_(0.05 * torch.randn_like(student.net.conv_out.weight))
    student.config["meta"] = dict(role="student", sampling=sfd_student_recipe(SFDPlan(nfe=2, branches=4)),
                                  teacher="teacher.safetensors", teacher_digest="0123456789abcdef",
                                  distill={"method": "sfd", "branches": 4, "weights": {"spec": "end:0.5"}})
    return save_model(tmp_path / "student.safetensors", student)


def _edm_block_student(tmp_path) -> Path:
    """A K=4 student with --branch-heads block whose heads and network differ: the export is the network alone."""
    from bdense.models.branches import widen
    from bdense.models.factory import new_model
    meta = load_model(_edm_student(tmp_path)).config["meta"]
    torch.manual_seed(3)
    student = widen(new_model("edm", 1, 8, preset="tiny").eval(), 4, heads="block")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student.config["meta"] = dict(meta, distill=dict(meta["distill"], branch_heads="block"))
    return save_model(tmp_path / "student.safetensors", student)


def _vp_student(tmp_path) -> Path:
    """A K=4 SFD student really distilled (tiny budget) from a diffusers v-prediction DDPM teacher directory."""
    from diffusers import DDPMScheduler, UNet2DModel

    from bdense.distill.sfd.run import distill_sfd
    torch.manual_seed(1)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=8).save_pretrained(tmp_path / "teacher" / "unet")
    DDPMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "teacher" / "scheduler")
    distill_sfd(str(tmp_path / "teacher"), str(tmp_path / "run"), nfe=2, branches=4, trajectories=16, batch=8,
                progress=False, grid_seeds=1, checkpoint_every=0)
    return tmp_path / "run" / "model.safetensors"


@pytest.mark.parametrize("make", [_edm_student, _edm_block_student, _vp_student],
                         ids=["edm-k4", "edm-k4-block-heads", "diffusers-v-teacher"])
def test_readme_diffusers_lines_reproduce_bdense_sample(tmp_path, make, cli):
    src = make(tmp_path)
    want, _, _ = sample_uint8(load_model(src), SEEDS, model_recipe(load_model(src)))
    # the README's export line, as written (paths swapped for this test's)
    line = _readme_block("bash", "## Use the student in diffusers").strip()
    args = shlex.split(line)[1:]
    args = [str(src) if a.endswith("model.safetensors") else str(tmp_path / "exp") if a == "student-diffusers"
            else a for a in args]
    code, out = cli(args)
    assert code == 0, out
    # the README's python lines, as written
    snippet = _readme_block("python", "## Use the student in diffusers").replace(
        '"student-diffusers"', repr(str(tmp_path / "exp")))
    scope: dict = {}
    exec(snippet, scope)
    got = np.stack([np.asarray(im) for im in scope["images"]]).reshape(want.shape)
    assert type(scope["pipe"]).__name__ == "BDensePipeline"
    assert np.abs(got.astype(int) - want).max() == 0
    # bdense samples its own export (and the run directory) with the recipe it was distilled for
    for where in [tmp_path / "exp"] + ([src.parent] if src.name == "model.safetensors" else []):  # run dir
        m = load_model(where)
        assert model_recipe(m) == model_recipe(load_model(src))
        assert np.array_equal(sample_uint8(m, SEEDS, model_recipe(m))[0], want)
    assert model_recipe(load_model(src)).afs and not model_recipe(load_model(src)).final_zero


def test_class_import_and_generators_match_seeds(tmp_path):
    """Class-conditional: labels drawn per seed as bdense does, --class cycled, fresh generators = seeds."""
    from bdense.models.export import export_model
    from bdense.models.factory import new_model
    from bdense.pipeline import BDensePipeline
    from bdense.sampling.recipe import Recipe
    torch.manual_seed(0)
    model = new_model("edm", 1, 8, num_classes=10, preset="tiny").eval()
    model.config["meta"] = dict(role="teacher", sampling=Recipe(solver="heun", nfe=5).to_dict())
    export_model(save_model(tmp_path / "t.safetensors", model), tmp_path / "exp", "diffusers")
    pipe = BDensePipeline.from_pretrained(tmp_path / "exp")
    pipe.set_progress_bar_config(disable=True)
    rec = model_recipe(model)
    want, labels, _ = sample_uint8(model, SEEDS, rec)
    assert np.array_equal(pipe(seeds=SEEDS, output_type="uint8").images, want)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    assert np.array_equal(pipe(generator=gens, output_type="uint8").images, want)
    fixed, fixed_labels, _ = sample_uint8(model, SEEDS, rec, classes=[(0, 1, 2)[i % 3] for i in SEEDS])
    assert list(fixed_labels) == [(0, 1, 2)[i % 3] for i in SEEDS] and list(labels) != list(fixed_labels)
    assert np.array_equal(pipe(seeds=SEEDS, class_labels=[0, 1, 2], output_type="uint8").images, fixed)
    assert np.array_equal(pipe(seeds=SEEDS[:1], output_type="np").images[0], want[0].astype(np.float32) / 255)
    with pytest.raises(ValueError, match="network evaluations"):
        pipe.scheduler.set_timesteps(7)


@pytest.mark.parametrize("param,solver", [("eps", "heun"), ("x", "euler"), ("v", "euler")])
def test_vp_cosine_models_export_exactly(tmp_path, param, solver):
    """VP cosine-time models (bdense's PD teachers and students; PD's recipe: time-uniform grid ending at 0)."""
    from bdense.models.export import export_model
    from bdense.models.factory import new_model
    from bdense.pipeline import BDensePipeline
    from bdense.sampling.recipe import Recipe
    torch.manual_seed(2)
    model = new_model(param, 1, 8, preset="tiny").eval()
    rec = Recipe(solver=solver, nfe=4 if solver == "euler" else 5, schedule="time-uniform", sigma_min=0.05,
                 sigma_max=80.0, final_zero=True)
    model.config["meta"] = dict(role="student", sampling=rec.to_dict())
    export_model(save_model(tmp_path / "m.safetensors", model), tmp_path / "exp", "diffusers")
    pipe = BDensePipeline.from_pretrained(tmp_path / "exp")
    pipe.set_progress_bar_config(disable=True)
    want = sample_uint8(model, SEEDS, rec)[0]
    assert np.array_equal(pipe(seeds=SEEDS, output_type="uint8").images, want)
    assert np.array_equal(sample_uint8(load_model(tmp_path / "exp"), SEEDS, rec)[0], want)


def test_exports_are_byte_identical_and_round_trip(tmp_path, cli):
    from bdense.models.export import export_model
    src = _edm_student(tmp_path)
    for fmt, a, b in (("diffusers", "d1", "d2"), ("bdense", "b1.safetensors", "b2.safetensors")):
        export_model(src, tmp_path / a, fmt)
        export_model(src, tmp_path / b, fmt)
    files = lambda d: {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}  # noqa: E731
    d1, d2 = files(tmp_path / "d1"), files(tmp_path / "d2")
    assert d1 == d2 and {"model_index.json", "README.md", "bdense.json", "bdense_pipeline.py",
                         "scheduler/scheduler_config.json", "unet/diffusion_pytorch_model.safetensors"} <= set(d1)
    assert (tmp_path / "b1.safetensors").read_bytes() == (tmp_path / "b2.safetensors").read_bytes()
    # the shipped pipeline is bdense/pipeline.py itself, and it imports no bdense
    code = (Path(__file__).resolve().parent.parent / "bdense" / "pipeline.py").read_bytes()
    assert d1["bdense_pipeline.py"] == code == d1["scheduler/bdense_pipeline.py"]
    assert not re.search(rb"^\s*(from|import) +(bdense|\.)", code, re.M)
    # the bdense-format export and the diffusers one are the same single-branch model with the same recipe
    a, b = load_model(tmp_path / "b1.safetensors"), load_model(tmp_path / "d1")
    assert a.branches == b.branches == 1 and a.config == b.config
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    card = d1["README.md"].decode()
    assert "(SFD, B-DENSE K=4)" in card and "| branch weights | end:0.5 |" in card and "0123456789abcdef" in card
    assert "80, 10.9293, 0.669886, 0.006" in card and "analytical first step" in card
    # --metrics: an FID written by bdense fid calc --out lands in the model card; a wrong file is refused
    (tmp_path / "fid.json").write_text(json.dumps({"fid": 3.25, "extractor": "domain", "n": 500, "reference_n": 1797,
                                                   "reference_data": "digits", "source": "model", "nfe": 2,
                                                   "seeds": "0-499"}))
    code, out = cli(["export", src, "--format", "diffusers", "--out", tmp_path / "d3", "--metrics",
                      tmp_path / "fid.json"])
    assert code == 0 and "FID 3.2500 (domain features, 500 samples" in (tmp_path / "d3" / "README.md").read_text()
    (tmp_path / "bad.json").write_text("{}")
    for args in (["--out", tmp_path / "d1"], ["--out", tmp_path / "d4", "--metrics", tmp_path / "bad.json"]):
        code, out = cli(["export", src, "--format", "diffusers", *args])
        assert code == 2 and out.count("\n") == 1 and out.startswith("error: "), out
    assert files(tmp_path / "d1") == d2 and not (tmp_path / "d4").exists()


def test_stock_edm_scheduler_cannot_hold_the_grid():
    """Why BDenseScheduler exists: EDMEulerScheduler re-maps explicit sigmas and stores them in float32."""
    from diffusers import EDMEulerScheduler

    from bdense.sampling.recipe import Recipe
    grid = Recipe(solver="euler", nfe=2, sigma_min=0.006, afs=True, final_zero=False).sigmas()
    sched = EDMEulerScheduler(sigma_min=0.006, sigma_max=80.0, final_sigmas_type="sigma_min")
    sched.set_timesteps(sigmas=grid.clone())
    assert sched.sigmas.dtype == torch.float32
    assert not torch.allclose(sched.sigmas[:len(grid)].double(), grid, rtol=1e-3)


def test_sample_writes_pngs_adm_npz_and_classes(tmp_path, tiny_teacher, cli):
    from bdense.data.datasets import load_dataset
    from bdense.models.factory import new_model
    from bdense.sampling.recipe import Recipe
    tiny_teacher.config["meta"] = dict(sampling=Recipe(solver="euler", nfe=3).to_dict())
    model = save_model(tmp_path / "m.safetensors", tiny_teacher)
    code, out = cli(["sample", model, "--seeds", "3,5,17", "--outdir", tmp_path / "png", "--npz", tmp_path / "s.npz",
                      "--npz-adm", tmp_path / "adm.npz"])
    assert code == 0, out
    ours = np.load(tmp_path / "s.npz")["images"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["000003.png", "000005.png", "000017.png"]
    back = load_dataset(f"folder:{tmp_path / 'png'}").images  # the PNGs read back as the same pixels
    assert np.array_equal(np.round((back.numpy().transpose(0, 2, 3, 1) + 1) * 127.5).astype(np.uint8), ours)
    with np.load(tmp_path / "adm.npz") as z:
        assert z.files == ["arr_0"] and z["arr_0"].dtype == np.uint8 and z["arr_0"].shape == (3, 8, 8, 3)
        assert all(np.array_equal(z["arr_0"][..., c], ours[..., 0]) for c in range(3))
    code, out = cli(["sample", model, "--class", "3", "--grid", tmp_path / "g.png"])
    assert code == 2 and "unconditional" in out and out.count("\n") == 1
    torch.manual_seed(0)
    cond = save_model(tmp_path / "c.safetensors", new_model("edm", 1, 8, num_classes=10, preset="tiny"))
    code, out = cli(["sample", cond, "--seeds", "0-4", "--class", "7,2", "--npz-adm", tmp_path / "c.npz",
                      "--nfe", "3", "--solver", "euler"])
    assert code == 0, out
    assert list(np.load(tmp_path / "c.npz")["arr_1"]) == [7, 2, 7, 2, 7]
    code, out = cli(["sample", cond, "--class", "10", "--grid", tmp_path / "g.png"])
    assert code == 2 and "out of range" in out


def test_help_teaches_and_fits_80_columns(cli, monkeypatch):
    from bdense.cli import command
    from bdense.clihelp import options_without_examples
    root = command()
    assert options_without_examples(root) == []
    code, out = cli(["--version"])
    assert code == 0 and re.fullmatch(r"bdense \d+\.\d+\.\d+\n", out)
    code, out = cli(["distill", "--help"])
    assert all(w in out for w in ("uniform", "sum1:", "end:", "decay:", "e.g."))
    from bdense.clihelp import _walk
    monkeypatch.setenv("COLUMNS", "80")
    for path, cmd in _walk(root):
        code, out = cli([*path.split(), "--help"])
        assert code == 0 and max(len(x) for x in out.splitlines()) <= 80, path
        for p in cmd.params:  # every option name is printed whole
            assert all(o in out for o in p.opts if p.param_type_name == "option"), (path, p.opts)


def test_report_grid_names_its_rows(tmp_path):
    from PIL import Image

    from bdense.data.images import make_grid, save_labeled_grid
    imgs = -torch.ones(48, 1, 8, 8)  # black images: any white pixel comes from a label
    save_labeled_grid(imgs, tmp_path / "g.png", ["teacher ref.", "baseline K=1", "bdense K=4"], nrow=16)
    g = np.asarray(Image.open(tmp_path / "g.png"))
    plain = make_grid(imgs, nrow=16)
    extra = g.shape[1] - plain.shape[1]
    assert extra > 20 and np.array_equal(g[:, extra:], plain)
    band = (plain.shape[0] - 2) // 3
    assert all(g[2 + r * band:2 + (r + 1) * band, :extra].max() > 200 for r in range(3))  # antialiased text
