"""The segmentation baselines (U-Net, VoxResNet, V-Net, Attention U-Net, U-Net++, SegResNet): size, shapes, training, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nslfcore.segmentation_baselines as baselines
from nslfcore.baseline import load_baseline
from nslfcore.cli import main as nslf
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.phantom import write_phantom_dataset
from nslfcore.inference import run
from nslfcore.losses import Stage3Loss
from nslfcore.model_store import ModelError, load_model, save_model
from nslfcore.models import Network
from nslfcore.segmentation_baselines import ARCHITECTURES, PARAMETERS, BaselineUNet, build_baseline
from nslfcore.voxresnet import VoxResNet

COMPACT_NSLF_PARAMETERS = 3_407_898


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_cli_offers_exactly_the_six_architectures():
    assert sorted(ARCHITECTURES) == sorted(["unet", "vnet", "attention_unet", "unetplusplus", "segresnet", "voxresnet"])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_count_is_the_documented_one(arch):
    model = build_baseline(arch)
    assert isinstance(model, Network) and (model.fuses, model.segments, model.sequential) == (False, True, False)
    assert _count(model) == pytest.approx(PARAMETERS[arch], rel=0.01)
    assert f"{PARAMETERS[arch]:,}" in baselines.__doc__  # the table in the module docstring says the same
    if arch != "vnet":  # V-Net's widths are fixed by MONAI; every other one is within the stated factor 1.5
        assert 1 / 1.5 <= PARAMETERS[arch] / COMPACT_NSLF_PARAMETERS <= 1.5


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_training_step_maps_the_shape_and_reaches_every_parameter(arch):
    torch.manual_seed(0)
    model = build_baseline(arch).train()
    x, labels = torch.rand(1, 4, 32, 32, 32), torch.randint(0, 4, (1, 32, 32, 32))
    logits = model(x)
    assert logits.shape == (1, 4, 32, 32, 32)
    Stage3Loss()(logits, labels)["total"].backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    # A bias right before a BatchNorm gets an exactly zero gradient (the norm cancels it); nothing else may.
    moving = sum(g.numel() for g in grads.values() if g is not None and g.abs().sum() > 0)
    assert moving >= 0.999 * _count(model)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_any_box_size_gives_logits_on_the_same_grid(arch):
    model = build_baseline(arch).eval()
    with torch.inference_mode():
        assert model.predict(torch.rand(1, 4, 20, 24, 28))[1].shape == (1, 4, 20, 24, 28)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_file_loads_back_the_same_network(arch, tmp_path):
    torch.manual_seed(1)
    model = build_baseline(arch)
    with torch.no_grad():  # non-default batch-norm statistics, so they must be saved too
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-0.1, 0.1)
    model.eval()
    path = save_model(model, tmp_path / f"{arch}.pt", epoch=2)
    fields = torch.load(path, weights_only=True)
    assert (fields["kind"], fields["arch"], fields["architecture"]) == ("baseline", arch, type(model).architecture)
    loaded, info = load_model(path)
    assert type(loaded) is type(model) and info.epoch == 2 and load_baseline(path).features == model.features
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())  # weights and statistics


def test_a_file_without_arch_is_the_unet_of_earlier_versions(tmp_path):
    path = save_model(BaselineUNet(), tmp_path / "old.pt")
    data = torch.load(path, weights_only=True)
    del data["arch"]  # what nslf baseline wrote before the architectures became a choice
    torch.save(data, path)
    model, _ = load_model(path)
    assert type(model) is BaselineUNet and model.features == (16, 32, 64, 128, 128, 16)


def test_a_file_whose_architecture_does_not_match_its_arch_is_refused(tmp_path):
    path = save_model(build_baseline("voxresnet"), tmp_path / "v.pt")
    data = torch.load(path, weights_only=True)
    data["architecture"] = "BasicUNet"
    torch.save(data, path)
    with pytest.raises(ModelError, match="not the VoxResNet of 'voxresnet'"):
        load_model(path)
    data["arch"] = "resnet50"
    torch.save(data, path)
    with pytest.raises(ModelError, match="unknown baseline architecture 'resnet50'"):
        load_model(path)


def test_voxresnet_sums_four_classifiers_at_four_scales():
    net = VoxResNet(4, 3, (8, 16))
    scales = [type(c).__name__ for c in net.classifiers]
    assert scales == ["Conv3d", "ConvTranspose3d", "ConvTranspose3d", "ConvTranspose3d"]
    assert [c.stride[0] for c in net.classifiers] == [1, 2, 4, 8]
    assert len([m for m in net.modules() if type(m).__name__ == "VoxRes"]) == 6  # VoxRes modules 2, 3, 5, 6, 8, 9
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 4, 12, 16, 16))


def test_wrong_widths_are_refused():
    with pytest.raises(ValueError, match="fixed"):
        build_baseline("vnet", (8, 16))
    with pytest.raises(ValueError, match="Unknown baseline architecture"):
        build_baseline("resnet")


def test_nslf_baseline_arch_trains_and_inference_scores_it_like_nslf(tmp_path):
    data = tmp_path / "data"
    write_phantom_dataset(data, 3, seed=21, tiny=True, size=(32, 32, 32))
    out = tmp_path / "run"
    args = ["baseline", "--arch", "voxresnet", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--steps-per-epoch", "1", "--crop", "32", "32", "32"]  # fmt: skip
    assert nslf(args) == 0
    assert torch.load(out / "baseline_best.pt", weights_only=True)["arch"] == "voxresnet"
    assert json.loads((out / "baseline_log.jsonl").read_text().splitlines()[0])["epoch"] == 1
    model = load_baseline(out / "baseline_best.pt")
    case = load_case(find_cases(data)[0])
    whole = run(case, model, fuse=False, device="cpu", mode="whole", probabilities=True)
    sliding = run(case, model, fuse=False, device="cpu", mode="sliding", roi=(32, 32, 16), probabilities=True)
    for result in (whole, sliding):
        assert result.fused is None and result.labels.shape == case.geometry.shape
        np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(SystemExit):  # argparse refuses an unknown --arch
        nslf(["baseline", "--arch", "resnet", "--data", str(data), "--out", str(tmp_path / "x")])
