"""What a new user meets first: the defaults are the studied ones; an export re-saved by diffusers still loads; a
model card names no local path and refuses another model's FID; folder samples get a digest; a hub id says how to
get it; a packed teacher goes to the user's folder, not into the package."""
import json
import stat

import numpy as np
import pytest
from test_export import _edm_student, cli  # noqa: F401 (cli: the fixture)

from bdense.defaults import STUDIED
from bdense.models.checkpoint import load_model, save_model
from bdense.sampling.sample import model_recipe, sample_uint8

SEEDS = list(range(4))


@pytest.mark.parametrize("method", ["sfd", "pd"])
def test_distill_compare_and_tune_resolve_the_same_defaults(method, tmp_path, tiny_teacher, cli):  # noqa: F811
    from bdense.cli import command
    from bdense.studies.compare import CompareConfig, parse_setting
    from bdense.studies.tune_plan import TuneConfig
    want = {name: value for name, (value, _) in STUDIED[method].items()}
    settings = tuple(map(parse_setting, ("baseline:1", "bdense:2")))
    comp = CompareConfig(teacher="t", out="o", method=method, settings=settings)
    tune = TuneConfig(teacher="t", out="o", method=method)
    for name, value in want.items():
        assert getattr(comp, name) == getattr(tune, name) == value, name
    assert tune.trial_trajectories == tune.trajectories  # trials at the full budget (docs/weights.md)
    # the commands leave these options unset, so the one resolution above applies to all three
    cmds = command().commands
    for cmd in ("distill", "compare", "tune"):
        defaults = {p.name: p.default for p in cmds[cmd].params}
        assert all(defaults[name] is None for name in want), (cmd, defaults)
    # distill --dry-run prints the resolved values, lr included
    if method == "sfd":
        teacher = save_model(tmp_path / "t.safetensors", tiny_teacher)
        code, out = cli(["distill", "--teacher", teacher, "--out", tmp_path / "x", "--branches", "4", "--dry-run"])
        assert code == 0, out
        assert f"batch {want['batch']} = {want['trajectories']} trajectories; Adam lr {want['lr']}" in out
        code, out = cli(["distill", "--teacher", teacher, "--out", tmp_path / "x", "--nfe", "2-3", "--dry-run"])
        assert code == 0 and f"= {2 * want['trajectories']} trajectories" in out, out
        # the plan names as defaults only the options left out: all three here, only lr there, none at the end
        line = "studied defaults, used for options left out: "
        assert out.count(line) == 1 and all(f"{n} {v} (" in out.split(line)[1] for n, v in want.items()), out
        given = ["--batch", "32", "--trajectories", "128"]
        code, out = cli(["distill", "--teacher", teacher, "--out", tmp_path / "x", *given, "--dry-run"])
        defaults = out.split(line)[1]
        assert code == 0 and f"lr {want['lr']} (" in defaults and "batch" not in defaults, out
        assert "trajectories" not in defaults and "batch 32 = 128 trajectories" in out, out
        code, out = cli(["distill", "--teacher", teacher, "--out", tmp_path / "x", *given, "--lr", "1e-3",
                         "--dry-run"])
        assert code == 0 and line not in out and "Adam lr 0.001" in out, out


def test_a_re_saved_export_loads_again_and_refuses_other_step_counts(tmp_path, cli):  # noqa: F811
    from diffusers import DiffusionPipeline
    src = _edm_student(tmp_path)
    code, out = cli(["export", src, "--format", "diffusers", "--out", tmp_path / "exp"])
    assert code == 0, out
    want = sample_uint8(load_model(src), SEEDS, model_recipe(load_model(src)))[0]
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "exp"), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(tmp_path / "again"))
    for folder in ("exp", "again"):
        files = [p for p in (tmp_path / folder).rglob("*") if p.is_file()]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), folder
    again = tmp_path / "again"
    assert {"bdense_pipeline.py", "scheduler/bdense_pipeline.py", "bdense.json", "README.md"} <= {
        str(p.relative_to(again)) for p in again.rglob("*")}
    assert json.loads((again / "model_index.json").read_text())["_class_name"] == ["bdense_pipeline", "BDensePipeline"]
    back = DiffusionPipeline.from_pretrained(str(again), trust_remote_code=True)
    back.set_progress_bar_config(disable=True)
    assert np.array_equal(back(seeds=SEEDS, output_type="uint8").images, want)
    assert np.array_equal(sample_uint8(load_model(again), SEEDS, model_recipe(load_model(src)))[0], want)
    assert np.array_equal(back(seeds=SEEDS, output_type="uint8", num_inference_steps=2).images, want)
    with pytest.raises(ValueError, match="num_inference_steps=4: this student was distilled for its own grid of 2"):
        back(seeds=SEEDS, num_inference_steps=4)


def test_model_card_metadata_paths_and_the_metrics_digest(tmp_path, cli):  # noqa: F811
    from huggingface_hub import ModelCard

    from bdense.io import file_digest
    src = _edm_student(tmp_path)
    good = {"fid": 3.25, "extractor": "domain", "n": 500, "reference_n": 1797, "reference_data": "digits",
            "source": "model", "nfe": 2, "seeds": "0-499", "model": str(src), "model_digest": file_digest(src)}
    (tmp_path / "fid.json").write_text(json.dumps(good))
    (tmp_path / "other.json").write_text(json.dumps(dict(good, model="x", model_digest="ffffffffffffffff")))
    code, out = cli(["export", src, "--format", "diffusers", "--out", tmp_path / "d", "--metrics",
                     tmp_path / "other.json"])
    assert code == 2 and "measured x (sha256 prefix ffffffffffffffff), not this model" in out, out
    assert not (tmp_path / "d").exists()
    code, out = cli(["export", src, "--format", "diffusers", "--out", tmp_path / "d", "--metrics",
                     tmp_path / "fid.json"])
    assert code == 0, out
    text = (tmp_path / "d" / "README.md").read_text()
    card = ModelCard.load(tmp_path / "d" / "README.md")
    assert card.data.license == "other" and card.data.pipeline_tag == "unconditional-image-generation"
    assert "FID 3.2500" in text and str(tmp_path) not in text  # no local absolute path in a published card
    # a class-conditional export gets no pipeline tag the Hub does not list
    from bdense.models.factory import new_model
    cond = new_model("edm", 1, 8, preset="tiny", num_classes=3).eval()
    cond.config["meta"] = load_model(src).config["meta"]
    save_model(tmp_path / "cond.safetensors", cond)
    code, out = cli(["export", tmp_path / "cond.safetensors", "--format", "diffusers", "--out", tmp_path / "c"])
    assert code == 0 and ModelCard.load(tmp_path / "c" / "README.md").data.pipeline_tag is None, out


def test_folder_samples_get_a_digest_that_follows_their_content(tmp_path):
    from bdense.data.images import save_pngs
    from bdense.io import files_digest
    from bdense.data.datasets import image_files
    rng = np.random.default_rng(0)
    save_pngs(rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8), list(range(6)), tmp_path / "s")
    first = files_digest(tmp_path / "s", image_files(tmp_path / "s"))
    assert first == files_digest(tmp_path / "s", image_files(tmp_path / "s"))
    save_pngs(rng.integers(0, 256, (1, 8, 8, 1), dtype=np.uint8), [2], tmp_path / "s")  # one image replaced
    assert files_digest(tmp_path / "s", image_files(tmp_path / "s")) != first


def test_hub_ids_say_how_and_pack_writes_to_the_user_folder(tmp_path, monkeypatch, tiny_teacher, cli):  # noqa: F811
    code, out = cli(["sample", "google/ddpm-cifar10-32", "--grid", tmp_path / "g.png"])
    assert code == 2 and "hf download google/ddpm-cifar10-32 --local-dir ddpm-cifar10-32" in out, out
    monkeypatch.delenv("BDENSE_TEACHERS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    save_model(tmp_path / "t.safetensors", tiny_teacher)
    code, out = cli(["teachers", "pack", tmp_path / "t.safetensors", "--name", "mine", "--check-seeds", "2"])
    assert code == 0 and (tmp_path / "data" / "bdense" / "teachers" / "mine.safetensors").is_file(), out
    code, out = cli(["teachers", "list"])
    assert "mine:" in out and "fashion-mnist-tiny:" in out, out  # the user's own beside the shipped ones


def test_a_student_does_not_inherit_the_teachers_training_steps(tmp_path, tiny_teacher):
    from bdense.distill.sfd.run import distill_sfd
    tiny_teacher.config["meta"] = {"data": "digits", "role": "teacher", "trained_steps": 7, "shipped_as": "tiny"}
    teacher = save_model(tmp_path / "t.safetensors", tiny_teacher)
    distill_sfd(str(teacher), str(tmp_path / "run"), nfe=2, branches=1, trajectories=8, batch=8, progress=False,
                grid_seeds=1, checkpoint_every=0)
    meta = load_model(tmp_path / "run" / "model.safetensors").config["meta"]
    assert "trained_steps" not in meta and "shipped_as" not in meta
    assert meta["teacher_shipped_as"] == "tiny" and meta["data"] == "digits" and meta["role"] == "student"


def test_the_same_feature_network_gets_the_same_digest(tmp_path):
    """The header stores no wall time, so `fid calc` accepts statistics of a network trained twice alike."""
    from bdense.io import file_digest
    from bdense.metrics.features import train_domain_classifier
    for name in ("a", "b"):
        train_domain_classifier("digits", tmp_path / f"{name}.safetensors", steps=2, log=None)
    assert file_digest(tmp_path / "a.safetensors") == file_digest(tmp_path / "b.safetensors")
