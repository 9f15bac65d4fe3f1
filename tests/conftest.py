"""Shared fixtures: offline, deterministic, CPU, tiny models."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models gain nothing from threads; avoids oversubscription


@pytest.fixture
def tiny_teacher():
    """A randomly initialised EDM teacher on 8x8x1 images (the 'tiny' preset)."""
    from bdense.models.factory import new_model
    torch.manual_seed(0)
    return new_model("edm", 1, 8, preset="tiny").eval()


@pytest.fixture
def tiny_teacher_file(tmp_path, tiny_teacher):
    from bdense.models.checkpoint import save_model
    return save_model(tmp_path / "teacher.safetensors", tiny_teacher)


@pytest.fixture(scope="session")
def digits_assets(tmp_path_factory):
    """A tiny random digits teacher and a quickly trained feature net (FID values are then only relative)."""
    from bdense.metrics.features import train_domain_classifier
    from bdense.models.checkpoint import save_model
    from bdense.models.factory import new_model
    d = tmp_path_factory.mktemp("digits-assets")
    torch.manual_seed(0)
    teacher = save_model(d / "teacher.safetensors", new_model("edm", 1, 8, preset="tiny", data="digits").eval())
    train_domain_classifier("digits", d / "features.safetensors", steps=30, log=None)
    return str(teacher), str(d / "features.safetensors")


@pytest.fixture
def keep_trial_weights(monkeypatch, tmp_path):
    """A tune trial deletes its weights when done: keep_trial_weights('distill_sfd') wraps that trainer of
    bdense.studies.tune so a copy of each trial's model stays; returns (the copy's path, the unwrapped trainer)."""
    import shutil
    from bdense.studies import tune as tune_mod

    def wrap(name: str):
        real, kept = getattr(tune_mod, name), tmp_path / "trial.safetensors"

        def keep(t, d, **kw):
            out = real(t, d, **kw)
            shutil.copy(f"{d}/model.safetensors", kept)
            return out
        monkeypatch.setattr(tune_mod, name, keep)
        return kept, real
    return wrap
