"""The four NSLF networks and their composition: shapes, gradients, identity start, fusion algebra, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nslfcore.config import PRESETS, NSLFConfig, get_config
from nslfcore.models import NSLF, AffineParameters, GeometricMatchingNetwork
from nslfcore.models.gmn import affine_theta, warp_affine

COMPACT = PRESETS["compact"]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(1, 4, 17, 23, 30), (2, 4, 16, 16, 16), (1, 4, 5, 40, 9)])
def test_output_shapes_for_odd_sizes(shape):
    model = NSLF(COMPACT)
    x = torch.rand(shape)
    out = model(x)
    b, _, d, h, w = shape
    assert out.fusion.fused.shape == (b, 1, d, h, w)
    assert out.fusion.weights.shape == (b, 4, d, h, w)
    assert out.sources.local_features.shape == (b, 4, COMPACT.local_width, d, h, w)
    assert out.sources.reconstruction.shape == (b, 4, d, h, w)
    padded = [math.ceil(s / 16) for s in (d, h, w)]
    assert out.sources.global_features.shape == (b, 4, COMPACT.global_width, *padded)
    assert out.registration.warped.shape == (b, 1, d, h, w)
    assert out.registration.dvf.shape == (b, 3, d, h, w)
    assert out.registration.theta.shape == (b, 3, 4)
    assert out.logits.shape == (b, 4, d, h, w)
    model.eval()
    with torch.no_grad():
        fusion, logits = model.fuse_and_segment(x)
        torch.testing.assert_close(model.fuse(x).fused, fusion.fused)
        torch.testing.assert_close(model.segment(x), logits)


def _stage_loss_inputs(out, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A loss made of everything the three stages' losses read (recon, fused, warped, DVF, logits)."""
    recon = F.mse_loss(out.sources.reconstruction, x)
    fidelity = (out.fusion.fused - x).abs().mean()
    registration = F.mse_loss(out.registration.warped.expand_as(x), x) + out.registration.dvf.pow(2).mean()
    fused_recon = F.mse_loss(out.fused_features.reconstruction, out.fusion.fused.detach())
    return recon + fidelity + registration + fused_recon + F.cross_entropy(out.logits, labels)


@pytest.mark.parametrize("cunet_weights", ["shared", "per_modality"])
def test_every_parameter_receives_a_gradient(cunet_weights):
    """After one optimiser step (the zero-initialised GMN heads block the layers feeding them at step 0)."""
    model = NSLF(COMPACT.replace(cunet_weights=cunet_weights))
    x = torch.rand(2, 4, 16, 16, 16)
    # Sources that differ by a shift, so the registration term has something to align.
    x[:, 1] = torch.roll(x[:, 0], shifts=2, dims=-1)
    labels = torch.randint(0, 4, (2, 16, 16, 16))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(2):
        optimiser.zero_grad()
        _stage_loss_inputs(model(x), x, labels).backward()
        if step == 0:
            heads = [model.gmn.rotation_head, model.gmn.scale_head, model.gmn.translation_head, model.gmn.shear_head]
            assert all(h.weight.grad.abs().sum() > 0 for h in heads), "the affine heads must get a gradient at once"
            optimiser.step()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_gmn_is_identity_at_initialisation():
    model = NSLF(COMPACT).eval()
    x = torch.rand(1, 4, 20, 24, 28)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out.registration.warped, out.fusion.fused, atol=1e-5, rtol=0)
    assert out.registration.dvf.abs().max() == 0
    identity = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    torch.testing.assert_close(out.registration.theta[0], identity)


def test_affine_rotation_and_translation_act_on_voxels():
    image = torch.rand(1, 1, 3, 7, 7)
    zeros = torch.zeros(1, 3)
    # 90 degrees about z (in-plane) on a square in-plane grid is an exact array rotation.
    params = AffineParameters(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.ones(1, 3), zeros, torch.zeros(1, 6))
    rotated = warp_affine(image, affine_theta(params, (3, 7, 7)))
    torch.testing.assert_close(rotated, torch.rot90(image, k=1, dims=(-2, -1)), atol=1e-5, rtol=0)
    # A translation of 2 / (W - 1) normalised units samples one voxel further along x.
    shift = AffineParameters(zeros, torch.ones(1, 3), torch.tensor([[2 / 6, 0.0, 0.0]]), torch.zeros(1, 6))
    moved = warp_affine(image, affine_theta(shift, (3, 7, 7)))
    torch.testing.assert_close(moved[..., :-1], image[..., 1:], atol=1e-5, rtol=0)


def test_multi_scale_alignment_is_selectable_and_active():
    for scales in [(1,), (2, 1), (4, 2, 1)]:
        gmn = GeometricMatchingNetwork(64, 8, scales=scales, flow_width=8)
        assert len(gmn.flow_heads) == len(scales)
    gmn = GeometricMatchingNetwork(64, 8, scales=(2, 1), flow_width=8)
    for head in gmn.flow_heads:
        torch.nn.init.normal_(head[-1].weight, std=0.1)
    g = torch.rand(1, 4, 64, 1, 1, 1)
    local = torch.rand(1, 4, 8, 16, 16, 16)
    fused_local = torch.rand(1, 1, 8, 16, 16, 16)
    fused = torch.rand(1, 1, 16, 16, 16)
    out = gmn(g, local, g[:, :1], fused_local, fused)
    assert out.dvf.abs().max() > 0
    assert (out.warped - fused).abs().max() > 1e-3
    with pytest.raises(ValueError, match="coarse to fine"):
        COMPACT.replace(gmn_scales=(1, 2))


@pytest.mark.parametrize("cunet_weights", ["shared", "per_modality"])
def test_fusion_weights_are_a_convex_combination(cunet_weights):
    model = NSLF(COMPACT.replace(cunet_weights=cunet_weights)).eval()
    x = torch.rand(2, 4, 17, 18, 19) * torch.tensor([1.0, 3.0, 0.5, 2.0]).reshape(1, 4, 1, 1, 1)
    with torch.no_grad():
        fused, weights = model.fuse(x)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 17, 18, 19), atol=1e-5, rtol=0)
    assert weights.min() >= 0
    torch.testing.assert_close(fused, (weights * x).sum(dim=1, keepdim=True))
    lo, hi = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
    assert bool((fused >= lo - 1e-5).all()) and bool((fused <= hi + 1e-5).all())
    assert (fused - x[:, :1]).abs().max() > 1e-3  # not a copy of one source


def test_documented_parameter_counts():
    paper_shared = NSLF(PRESETS["paper"].replace(cunet_weights="shared"))
    assert _count(paper_shared.cunet) == 10_739_873
    assert _count(paper_shared.fcd) == 1_888_161
    assert _count(paper_shared.fsd) == 415_432
    assert _count(NSLF(PRESETS["paper"]).cunet) == 4 * 10_739_873  # per-modality: a group of four U-Nets
    compact_shared = NSLF(COMPACT.replace(cunet_weights="shared"))
    assert _count(compact_shared.cunet) == 672_617
    assert _count(NSLF(COMPACT).cunet) == 4 * 672_617
    assert _count(NSLF(COMPACT)) == 3_407_898


def test_config_round_trips_through_json(tmp_path):
    for config in PRESETS.values():
        assert NSLFConfig.from_json(config.to_json()) == config
    path = tmp_path / "custom.json"
    path.write_text(COMPACT.replace(name="mine", gmn_scales=(1,)).to_json())
    assert get_config(str(path)).gmn_scales == (1,)
    with pytest.raises(ValueError, match="Unknown NSLF configuration keys"):
        NSLFConfig.from_dict({"widths": [1, 2]})
    with pytest.raises(ValueError, match="Unknown configuration"):
        get_config("huge")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(1, 3, 8, 8, 8), "4 modalities"),
        (torch.rand(1, 5, 8, 8, 8), "4 modalities"),
        (torch.rand(4, 8, 8, 8), "5-D tensor"),
        (torch.rand(1, 1, 4, 8, 8, 8), "5-D tensor"),
        (torch.randint(0, 5, (1, 4, 8, 8, 8)), "floating-point"),
    ],
)
def test_bad_input_shapes_raise(x, message):
    model = NSLF(COMPACT)
    with pytest.raises(ValueError, match=message):
        model.fuse(x)
    with pytest.raises(ValueError, match=message):
        model.segment(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises(bad):
    x = torch.rand(1, 4, 8, 8, 8)
    x[0, 2, 3, 3, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        NSLF(COMPACT)(x)


def test_ablation_switches():
    x = torch.rand(1, 4, 32, 32, 32)  # BatchNorm in training mode needs > 1 bottleneck voxel at batch 1
    no_gmn = NSLF(COMPACT.replace(use_gmn=False))
    out = no_gmn(x)
    assert no_gmn.gmn is None and out.registration is None and out.fused_features is None
    fused_only = NSLF(COMPACT.replace(segmenter_input="fused_only")).eval()
    assert fused_only.fsd.blocks[0][0].in_channels == 1
    assert fused_only.segment(x).shape == (1, 4, 32, 32, 32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_fast_paths_equal_the_generic_grouped_layers(dtype):
    """The per-group transposed convolution and the channels-last interleaving change speed, not results."""
    from nslfcore.models.blocks import GroupedUpsample, UpBlock, _cat_groups_channels_last, cat_channels, cat_groups

    torch.manual_seed(0)
    cl = torch.channels_last_3d
    first, second = torch.rand(2, 12, 4, 6, 5, dtype=dtype), torch.rand(2, 8, 4, 6, 5, dtype=dtype)
    generic = cat_groups(first, second, 4)
    fast = cat_groups(first.contiguous(memory_format=cl), second.contiguous(memory_format=cl), 4)
    assert torch.equal(fast, generic) and fast.is_contiguous(memory_format=cl)
    parts = list(second.chunk(4, dim=1))
    assert torch.equal(_cat_groups_channels_last(first.contiguous(memory_format=cl), parts, 4), generic)
    view = second.reshape(2, 4, 2, 4, 6, 5)[:, 1]  # a strided per-modality view, another dtype
    joined = cat_channels([first.contiguous(memory_format=cl), view, torch.rand(2, 1, 4, 6, 5)])
    assert torch.equal(joined, torch.cat((first, view, joined[:, -1:]), dim=1)) and joined.is_contiguous(memory_format=cl)
    assert joined.dtype == torch.float32  # promoted as torch.cat does

    up = GroupedUpsample(8, groups=4).to(dtype)
    reference = torch.nn.ConvTranspose3d(8, 8, kernel_size=2, stride=2, groups=4).to(dtype)
    reference.load_state_dict(up.state_dict())  # same parameters, same names
    x = torch.rand(1, 8, 3, 4, 5, dtype=dtype)
    with torch.inference_mode():
        torch.testing.assert_close(up(x), reference(x), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-2)
        block = UpBlock(2, 3, 4, groups=4).to(dtype).eval()
        coarse, skip = torch.rand(1, 8, 3, 4, 5, dtype=dtype), torch.rand(1, 12, 6, 8, 10, dtype=dtype)
        plain = block(coarse, skip)
        channels_last = block.to(memory_format=cl)(coarse.contiguous(memory_format=cl), skip.contiguous(memory_format=cl))
    torch.testing.assert_close(channels_last, plain, rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-2)
