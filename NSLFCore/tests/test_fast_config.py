"""The ``fast`` configuration (``feature_stride=2``): CU-Net, FCD and FSD on the 2x coarser grid, outputs on the input grid."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nslfcore.config import PRESETS, NSLFConfig
from nslfcore.models import NSLF, GeometricMatchingNetwork

FAST = PRESETS["fast"]


def test_fast_is_compact_on_a_coarser_grid():
    assert FAST.feature_stride == 2 and PRESETS["compact"].feature_stride == 1 and PRESETS["paper"].feature_stride == 1
    assert FAST.size_multiple == 32 and PRESETS["compact"].size_multiple == 16
    assert FAST.cunet_widths == PRESETS["compact"].cunet_widths
    assert sum(p.numel() for p in NSLF(FAST).parameters()) == 3_411_238
    # A configuration written before the field existed (every model file up to v2) is the paper's full resolution.
    stored = PRESETS["compact"].to_dict()
    del stored["feature_stride"]
    assert NSLFConfig.from_dict(stored).feature_stride == 1
    with pytest.raises(ValueError, match="feature_stride"):
        FAST.replace(feature_stride=3)


@pytest.mark.parametrize("shape", [(2, 4, 17, 23, 30), (2, 4, 32, 32, 32), (2, 4, 5, 40, 9)])
def test_outputs_are_on_the_input_grid(shape):
    model = NSLF(FAST)
    x = torch.rand(shape)
    out = model(x)
    b, _, d, h, w = shape
    for tensor, channels in ((out.fusion.fused, 1), (out.fusion.weights, 4), (out.sources.reconstruction, 4),
                             (out.registration.warped, 1), (out.registration.dvf, 3), (out.logits, 4)):  # fmt: skip
        assert tensor.shape == (b, channels, d, h, w)
    coarse = [math.ceil(s / 32) * 16 for s in (d, h, w)]  # padded to 32, then halved
    assert out.sources.local_features.shape == (b, 4, FAST.local_width, *coarse)
    assert out.sources.global_features.shape == (b, 4, FAST.global_width, *(c // 16 for c in coarse))
    assert model.extract_features(x).reconstruction.shape == (b, 4, d, h, w)
    model.eval()
    with torch.no_grad():
        fusion, logits = model.fuse_and_segment(x)
        torch.testing.assert_close(model.fuse(x).fused, fusion.fused)
        torch.testing.assert_close(model.segment(x), logits)
        sequential_fusion, sequential_logits = model.fuse_and_segment_sequential(x)
        torch.testing.assert_close(sequential_fusion.fused, fusion.fused, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sequential_logits, logits, atol=1e-5, rtol=1e-5)


def test_fusion_stays_a_convex_combination_of_the_full_resolution_sources():
    model = NSLF(FAST).eval()
    x = torch.rand(2, 4, 17, 18, 19) * torch.tensor([1.0, 3.0, 0.5, 2.0]).reshape(1, 4, 1, 1, 1)
    with torch.no_grad():
        fused, weights = model.fuse(x)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 17, 18, 19), atol=1e-5, rtol=0)
    assert weights.min() >= 0
    torch.testing.assert_close(fused, (weights * x).sum(dim=1, keepdim=True))
    # Full-resolution detail survives: the fused volume is not a blurred (pooled) volume.
    blurred = F.interpolate(F.avg_pool3d(x, 2, ceil_mode=True), size=x.shape[2:], mode="trilinear")
    assert (fused - (weights * blurred).sum(dim=1, keepdim=True)).abs().mean() > 0.05


def test_every_parameter_receives_a_gradient():
    model = NSLF(FAST)
    x = torch.rand(2, 4, 32, 32, 32)
    x[:, 1] = torch.roll(x[:, 0], shifts=2, dims=-1)
    labels = torch.randint(0, 4, (2, 32, 32, 32))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(2):
        optimiser.zero_grad()
        out = model(x)
        loss = (
            F.mse_loss(out.sources.reconstruction, x)
            + (out.fusion.fused - x).abs().mean()
            + F.mse_loss(out.registration.warped.expand_as(x), x)
            + out.registration.dvf.pow(2).mean()
            + F.mse_loss(out.fused_features.reconstruction, out.fusion.fused.detach())
            + F.cross_entropy(out.logits, labels)
        )
        loss.backward()
        if step == 0:
            optimiser.step()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_coarse_displacements_are_scaled_to_input_voxels():
    """A displacement of 1 coarse voxel is 2 input voxels once brought to the input grid."""
    gmn = GeometricMatchingNetwork(global_width=8, local_width=2, num_sources=4, scales=(1,), flow_width=8).eval()
    torch.nn.init.constant_(gmn.flow_heads[0][-1].bias, 1.0)  # a constant flow of one voxel along z, y, x
    fused = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = gmn(torch.rand(1, 4, 8, 1, 1, 1), torch.rand(1, 4, 2, 8, 8, 8), torch.rand(1, 1, 8, 1, 1, 1),
                  torch.rand(1, 1, 2, 8, 8, 8), fused)  # fmt: skip
    assert out.dvf.shape == (1, 3, 16, 16, 16)
    torch.testing.assert_close(out.dvf, torch.full_like(out.dvf, 2.0))


def test_the_refinement_needs_the_sources_and_fused_only_works():
    model = NSLF(FAST).eval()
    x = torch.rand(1, 4, 32, 32, 32)
    with torch.no_grad():
        sources, fusion = model._encode_and_fuse(x)
        with pytest.raises(ValueError, match="pass them"):
            model.fsd(sources.local_features, fusion.fused)
        fused_only = NSLF(FAST.replace(segmenter_input="fused_only")).eval()
        assert fused_only.segment(x).shape == (1, 4, 32, 32, 32)


def test_fast_needs_a_fraction_of_compacts_memory():
    """Measured peak RSS of one fp32 pass on a 155 x 181 x 139 box: 1.83 GiB (fast), 4.93 GiB (compact)."""
    fast, compact = NSLF(FAST), NSLF(PRESETS["compact"])
    assert fast.inference_bytes_per_voxel() * 2.5 < compact.inference_bytes_per_voxel()
    # One modality at a time saves little more: most of fast's memory is on the input grid.
    assert fast.inference_bytes_per_voxel(sequential=True) < compact.inference_bytes_per_voxel(sequential=True)
