"""Denoisers, branch widening/export, checkpoints, the diffusers adapter, and seeded sampling."""
import json

import numpy as np
import pytest
import torch

from bdense.errors import BdenseError
from bdense.models.branches import export_endpoint, widen
from bdense.models.checkpoint import load_model, save_model
from bdense.models.factory import new_model


@pytest.mark.parametrize("param", ["edm", "eps", "x", "v"])
def test_widened_branches_equal_teacher_at_init(param):
    torch.manual_seed(0)
    teacher = new_model(param, 1, 8, preset="tiny").eval()
    student = widen(teacher, 4).eval()
    x, s = torch.randn(3, 1, 8, 8) * 2, torch.tensor([0.1, 1.0, 7.0])
    with torch.no_grad():
        t_out, s_out = teacher(x, s), student(x, s)
    assert s_out.shape == (3, 4, 1, 8, 8)
    for k in range(4):
        assert torch.equal(s_out[:, k], t_out[:, 0])


def test_export_keeps_endpoint_branch_exactly(tiny_teacher):
    student = widen(tiny_teacher, 3)
    with torch.no_grad():  # make branches differ
        student.net.conv_out.weight.add_(torch.randn_like(student.net.conv_out.weight) * 0.1)
    single = export_endpoint(student)
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        assert single.branches == 1
        assert torch.equal(single(x, s)[:, 0], student(x, s)[:, -1])
        assert not torch.equal(student(x, s)[:, 0], student(x, s)[:, -1])
    assert sum(p.numel() for p in single.parameters()) == sum(p.numel() for p in tiny_teacher.parameters())


def test_checkpoint_round_trip_is_exact(tmp_path, tiny_teacher):
    student = widen(tiny_teacher, 2)
    path = save_model(tmp_path / "m.safetensors", student, {"note": "x"})
    loaded = load_model(path)
    assert loaded.branches == 2 and loaded.config["meta"] == {"note": "x"}
    for (k, a), (_, b) in zip(student.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_bad_checkpoints_are_refused_in_one_line(tmp_path, tiny_teacher):
    from safetensors.torch import save_file
    good = save_model(tmp_path / "good.safetensors", tiny_teacher)
    raw = good.read_bytes()
    cases = {}
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    cases["trunc.safetensors"] = "truncated or corrupt"
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    cases["junk.safetensors"] = "truncated or corrupt"
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    cases["foreign.safetensors"] = "not a bdense model"
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    cases["model.pt"] = "pickle"
    cases["missing.safetensors"] = "does not exist"
    for name, expect in cases.items():
        with pytest.raises(BdenseError) as e:
            load_model(tmp_path / name)
        assert expect in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def _tiny_unet(out_channels=1):
    from diffusers import UNet2DModel
    torch.manual_seed(1)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=out_channels, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=8)


@pytest.mark.parametrize("pred", ["epsilon", "sample", "v_prediction"])
def test_diffusers_adapter_matches_ddim(tmp_path, pred):
    """A diffusers UNet + DDIM scheduler: our Euler step in the sigma view equals diffusers' DDIM step (eta 0)."""
    from diffusers import DDIMScheduler
    unet = _tiny_unet()
    sched = DDIMScheduler(num_train_timesteps=1000, prediction_type=pred, clip_sample=False, set_alpha_to_one=True)
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "scheduler")
    model = load_model(tmp_path)
    assert model.config["vp"]["parameterization"] == {"epsilon": "eps", "sample": "x", "v_prediction": "v"}[pred]
    sched.set_timesteps(10)
    t, t_prev = int(sched.timesteps[3]), int(sched.timesteps[4])
    abar = sched.alphas_cumprod.double()
    z = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = sched.step(unet(z.float(), t).sample.double(), t, z).prev_sample
        sig, sig_prev = ((1 - abar[t]) / abar[t]).sqrt(), ((1 - abar[t_prev]) / abar[t_prev]).sqrt()
        x = (z / abar[t].sqrt()).float()
        d = model(x, torch.full((2,), float(sig)))[:, -1].double()
        x_next = x.double() + (sig_prev - sig) * (x.double() - d) / sig
        ours = x_next * abar[t_prev].sqrt()
    assert torch.allclose(ours, ref, atol=2e-5), (ours - ref).abs().max()


def test_pickled_diffusers_weights_need_trust(tmp_path):
    from diffusers import DDPMScheduler
    _tiny_unet().save_pretrained(tmp_path / "unet", safe_serialization=False)
    DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(BdenseError, match="--trust-pickle"):
        load_model(tmp_path)
    assert load_model(tmp_path, trust_pickle=True).config["kind"] == "vp"


def test_sampling_depends_only_on_seed(tiny_teacher):
    from bdense.data.images import to_uint8
    from bdense.sampling.recipe import Recipe
    from bdense.sampling.sample import generate
    recipe = Recipe(solver="heun", nfe=9)
    seeds = list(range(10, 26))
    one = np.concatenate([to_uint8(im) for _, im, _ in generate(tiny_teacher, seeds, recipe, batch_size=1)])
    many = np.concatenate([to_uint8(im) for _, im, _ in generate(tiny_teacher, seeds, recipe, batch_size=16)])
    rev = np.concatenate([to_uint8(im) for _, im, _ in generate(tiny_teacher, seeds[::-1], recipe, batch_size=5)])
    assert np.array_equal(one, many)
    assert np.array_equal(one, rev[::-1])


def test_model_config_is_json_and_rebuilds(tiny_teacher):
    from bdense.models.denoisers import denoiser_from_config
    cfg = json.loads(json.dumps(tiny_teacher.config))
    assert denoiser_from_config(cfg).config == tiny_teacher.config


def test_ddpm_cifar10_preset_has_the_ddpm_layout():
    """35.7M parameters as in DDPM's CIFAR-10 model, attention at 16x16 with one head over all 256 channels."""
    from bdense.models.unet import build_unet, unet_config
    cfg = unet_config("ddpm-cifar10", 3, 32)
    net = build_unet(json.loads(json.dumps(cfg)))  # the config survives JSON (a null head width included)
    assert sum(p.numel() for p in net.parameters()) == 35_746_307
    heads = [(m.heads, m.inner_dim) for m in net.modules() if type(m).__name__ == "Attention"]
    assert heads and all(h == (1, 256) for h in heads)


# -- --branch-heads block: branches 1..K-1 with their own copy of the last stage ----------------------------------

def _perturbed(student, scale=0.05):
    """The student with every weight nudged (seeded), so that branches and heads differ."""
    torch.manual_seed(5)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(scale * torch.randn_like(p))
    return student


@pytest.mark.parametrize("param", ["edm", "eps", "v"])
def test_block_heads_start_equal_to_the_teacher(param):
    torch.manual_seed(0)
    teacher = new_model(param, 1, 8, preset="tiny").eval()
    student = widen(teacher, 4, heads="block").eval()
    assert len(student.heads) == 3 and student.net.config.out_channels == 1  # the network is the endpoint branch
    x, s = torch.randn(3, 1, 8, 8) * 2, torch.tensor([0.1, 1.0, 7.0])
    with torch.no_grad():
        t_out, s_out = teacher(x, s), student(x, s)
    assert s_out.shape == (3, 4, 1, 8, 8)
    for k in range(4):
        assert torch.equal(s_out[:, k], t_out[:, 0]), k
    assert student._trunk is None  # nothing of the forward call is kept


def test_branch_heads_shared_and_k1_are_the_old_widening(tiny_teacher):
    """shared is the default, bit for bit; K = 1 has no intermediate branch, so block is plain K = 1 too."""
    for k, heads in ((4, "shared"), (1, "block"), (1, "shared")):
        a, b = widen(tiny_teacher, k), widen(tiny_teacher, k, heads=heads)
        assert a.config == b.config and "branch_heads" not in b.config and b.heads is None
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)
    with pytest.raises(BdenseError, match="use shared or block"):
        widen(tiny_teacher, 2, heads="wide")


def test_block_heads_keep_an_intermediate_branch_off_the_endpoints_last_stage(tiny_teacher):
    student = _perturbed(widen(tiny_teacher, 3, heads="block")).train()
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 3.0])
    student(x, s)[:, 0].abs().sum().backward()  # branch 1's loss alone
    own = {n for n, _ in student.named_parameters()
           if n.startswith(("net.up_blocks.1.resnets.1.", "net.conv_norm_out.", "net.conv_out."))}
    assert own and len(own) == sum(1 for _ in student.heads[0].parameters())
    for n, p in student.named_parameters():
        if n in own or n.startswith("heads.1."):  # the endpoint's last stage, branch 2's head
            assert p.grad is None or not p.grad.any(), n
    assert all(p.grad is not None and p.grad.any() for p in student.heads[0].parameters())
    assert student.net.conv_in.weight.grad.any()  # the shared trunk learns from every branch


def test_block_heads_export_to_the_endpoint_path_and_round_trip(tmp_path, tiny_teacher):
    student = _perturbed(widen(tiny_teacher, 4, heads="block"))
    path = save_model(tmp_path / "m.safetensors", student)
    loaded = load_model(path)
    assert loaded.config["branch_heads"] == "block" and len(loaded.heads) == 3
    sa, sb = student.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)
    single = export_endpoint(loaded)
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        out = student(x, s)
        assert torch.equal(single(x, s)[:, 0], out[:, -1])
        assert not torch.equal(out[:, 0], out[:, -1])
    assert single.branches == 1 and single.heads is None and "branch_heads" not in single.config
    assert single.state_dict().keys() == tiny_teacher.state_dict().keys()  # a plain model of the baseline's size
    plain = load_model(save_model(tmp_path / "e.safetensors", single))
    with torch.no_grad():
        assert torch.equal(plain(x, s)[:, 0], out[:, -1])
