"""Shipped teachers: `bdense teachers pack` stores bf16 weights and a card; `--teacher NAME` finds them; loading
gives back an fp32 model equal to the bf16-rounded weights."""
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from bdense.cli import app
from bdense.errors import BdenseError
from bdense.models.checkpoint import load_model, save_model
from bdense.models.shipped import pack, resolve, training_command

TEACHERS = Path(__file__).resolve().parent.parent / "bdense" / "teachers"


@pytest.fixture
def shipped(tmp_path, monkeypatch, tiny_teacher):
    """A tiny teacher 'run' (model + options.json) packed as `tiny` into a teachers folder."""
    monkeypatch.setenv("BDENSE_TEACHERS", str(tmp_path / "teachers"))
    run = tmp_path / "run"
    run.mkdir()
    tiny_teacher.config["meta"] = {"data": "digits", "role": "teacher", "trained_steps": 7}
    src = save_model(run / "model.safetensors", tiny_teacher)
    opts = {"command": "train-teacher", "data": "digits", "preset": "tiny", "steps": 7, "batch": 8, "lr": 0.002,
            "class_cond": False, "resolution": None, "out": str(run), "resume": False}
    (run / "options.json").write_text(json.dumps(opts))
    st, card = pack(src, "tiny", quality=("Heun 35: domain FID 1.23 (test)",), check_seeds=4)
    return src, st, card


def test_pack_stores_bf16_and_loads_back_as_fp32(shipped, tiny_teacher):
    src, st, card = shipped
    with safe_open(str(st), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.bfloat16}
    assert st.stat().st_size < 0.6 * src.stat().st_size
    back = load_model("tiny")  # the short name, not a path
    for (k, a), b in zip(tiny_teacher.state_dict().items(), back.state_dict().values()):
        assert b.dtype == torch.float32 and torch.equal(b, a.to(torch.bfloat16).float()), k
    assert not all(torch.equal(a, b) for a, b in zip(tiny_teacher.state_dict().values(), back.state_dict().values()))
    assert back.config["meta"]["shipped_as"] == "tiny" and back.config["meta"]["data"] == "digits"
    text = card.read_text()
    assert "bdense train-teacher --data digits --preset tiny --steps 7 --batch 8 --lr 0.002" in text
    assert "Heun 35: domain FID 1.23 (test)" in text and "bf16 rounding" in text


def test_short_names_work_in_commands(shipped, tmp_path):
    run = CliRunner().invoke
    r = run(app, ["sample", "tiny", "--seeds", "0-3", "--npz", str(tmp_path / "s.npz"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = run(app, ["distill", "--teacher", "tiny", "--out", str(tmp_path / "d"), "--dry-run", "--branches", "4"])
    assert r.exit_code == 0 and "K=4" in r.output, r.output
    r = run(app, ["teachers", "list"])
    assert r.exit_code == 0 and "tiny:" in r.output
    assert resolve("tiny") == shipped[1] and resolve(str(shipped[0])) == shipped[0]
    with pytest.raises(BdenseError, match=r"shipped teachers: (.*, )?tiny(, .*)? \(in "):
        load_model("mnsit")


def test_short_names_work_in_metric_commands(shipped, tmp_path, digits_assets):
    """fid calc --model and agreement --teacher take a shipped name like every other model option."""
    run = CliRunner().invoke
    _, features = digits_assets
    ref = tmp_path / "ref.npz"
    r = run(app, ["fid", "ref", "--data", "digits", "--out", str(ref), "--extractor", "domain", "--features", features,
                  "--max", "200"])
    assert r.exit_code == 0, r.output
    fids = []
    for model in ("tiny", str(shipped[1])):
        out = tmp_path / f"fid-{len(fids)}.json"
        r = run(app, ["fid", "calc", "--ref", str(ref), "--model", model, "--seeds", "0-15", "--nfe", "2",
                      "--solver", "euler", "--device", "cpu", "--out", str(out)])
        assert r.exit_code == 0, r.output
        fids.append(json.loads(out.read_text()))
    assert fids[0]["fid"] == fids[1]["fid"] and fids[0]["model"] == str(shipped[1])
    r = run(app, ["agreement", "--model", str(shipped[1]), "--teacher", "tiny", "--seeds", "0-3", "--teacher-nfe", "5",
                  "--device", "cpu"])
    assert r.exit_code == 0 and "rmse" in r.output.lower(), r.output


def test_training_command_from_options():
    assert training_command({"command": "train-teacher", "data": "mnist", "class_cond": True, "seed": 0,
                             "preset": None}) == "bdense train-teacher --data mnist --class-cond --seed 0"


def test_a_teacher_cut_by_a_time_limit_is_finished_where_it_got(tmp_path):
    """What gpu_study.sh does when the GPU teacher outruns its limit: SIGTERM left a checkpoint at step S; resuming
    with --steps S writes the model from it, the same model as a run of S steps."""
    from bdense.train.teacher import train_teacher
    kw = dict(preset="tiny", batch=8, lr=2e-3, progress=False, device="cpu", grid_seeds=4, log_every=1)
    train_teacher("digits", str(tmp_path / "cut"), steps=6, checkpoint_every=3, **kw)
    (tmp_path / "cut" / "model.safetensors").unlink()
    newest = sorted((tmp_path / "cut" / "checkpoints").glob("state-*.safetensors"))[-1]
    newest.unlink()  # as if stopped at step 3
    train_teacher("digits", str(tmp_path / "cut"), steps=3, resume=True, checkpoint_every=3, **kw)
    train_teacher("digits", str(tmp_path / "whole"), steps=3, checkpoint_every=3, **kw)
    a, b = load_model(tmp_path / "cut" / "model.safetensors"), load_model(tmp_path / "whole" / "model.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    log = (tmp_path / "cut" / "log.txt").read_text()
    assert "nan" not in log and "resumed with no steps left" in log  # the H200 run logged 'final loss nan' here


CHECK = re.compile(r"check \(tests/test_teachers\.py\): domain FID ([0-9.]+) ± ([0-9.]+), `bdense fid calc --ref (\S+) "
                   r"--model (bdense/teachers/\S+\.safetensors) --seeds 0-(\d+) --nfe (\d+) --solver (\w+)`")


def committed_teachers():
    files = sorted(TEACHERS.glob("*.safetensors"))
    assert files, "no committed teachers"
    return [f.stem for f in files]


@pytest.mark.parametrize("name", committed_teachers())
def test_committed_teacher_keeps_its_cards_quality_claim(name, monkeypatch):
    """Each teacher in the repository's teachers/ is the file its card names (sha256 prefix), loads by its short
    name, and scores the domain FID its card's check line states, within the stated tolerance: a few hundred seeds
    at a short solver against reference statistics shipped in teachers/features/ (its feature net beside them), so
    a changed weight file, sampler, solver or feature path shows here, offline, in seconds."""
    from bdense.io import file_digest
    from bdense.metrics.fid import fid_calc
    monkeypatch.delenv("BDENSE_TEACHERS", raising=False)
    monkeypatch.chdir(TEACHERS.parent.parent)  # the card's command runs from the repository's top folder
    card = (TEACHERS / f"{name}.md").read_text()
    assert re.search(rf"bf16 weights .*sha256 prefix `{file_digest(TEACHERS / f'{name}.safetensors')}`", card)
    m = CHECK.search(card)
    assert m, f"{name}.md states no check line (see teachers/README.md)"
    want, tol, ref, model, last, nfe, solver = m.groups()
    assert model == f"bdense/teachers/{name}.safetensors" and load_model(name).resolution > 0  # the short name finds it
    r = fid_calc(ref, model=model, seeds=f"0-{last}", nfe=int(nfe), solver=solver, device="cpu", progress=False)
    assert abs(r["fid"] - float(want)) <= float(tol), (name, r["fid"], want, tol)
