"""The max-gradient detail loss (nslfcore.losses.detail), an optional stage-2 term beyond the paper."""

from __future__ import annotations

import pytest
import torch

from nslfcore.losses import MaxGradientLoss, Stage2Loss
from nslfcore.losses.weights import Stage2LossWeights


def _edges() -> torch.Tensor:
    """Two sources (1, 2, 8, 8, 8): a step along x in the first, a step along z in the second."""
    sources = torch.zeros(1, 2, 8, 8, 8)
    sources[:, 0, :, :, 4:] = 1.0
    sources[:, 1, 4:] = 1.0
    return sources


def test_zero_for_a_source_itself_and_hand_value():
    sources = _edges()
    loss = MaxGradientLoss()
    assert float(loss(sources[:, :1], sources[:, :1])) == 0.0  # one source, fused = that source
    # The sum keeps both steps exactly (each source is constant along the other's axis): zero loss.
    assert float(loss(sources.sum(dim=1, keepdim=True), sources)) == pytest.approx(0.0)
    # The mean halves both steps: on the cropped 7^3 grid, each axis with a step has 7 x 7 voxels of
    # difference 1 in the strongest source against 0.5 in the mean.
    mean = sources.mean(dim=1, keepdim=True)
    expected = (2 * 49 * 0.5) / (3 * 7**3)
    assert float(loss(mean, sources)) == pytest.approx(expected, rel=1e-6)


def test_prefers_detail_over_the_mean_and_has_gradients():
    sources = _edges() + 0.01 * torch.rand(1, 2, 8, 8, 8)
    loss = MaxGradientLoss()
    fused = sources.mean(dim=1, keepdim=True).requires_grad_(True)
    value = loss(fused, sources)
    value.backward()
    assert fused.grad is not None and float(fused.grad.abs().sum()) > 0
    assert float(loss(sources.sum(dim=1, keepdim=True), sources)) < 0.2 * value.item()
    with pytest.raises(ValueError, match=">= 2"):
        loss(torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 2, 1, 4, 4))


def test_stage2_adds_the_term_only_when_weighted():
    x = torch.rand(1, 4, 12, 12, 12)
    fused = x.mean(dim=1, keepdim=True)
    paper = Stage2Loss(Stage2LossWeights(ncc=0, smooth=0))(x, fused)
    assert "detail" not in paper
    weights = Stage2LossWeights(ncc=0, smooth=0, detail=3.0)
    out = Stage2Loss(weights)(x, fused)
    assert float(out["detail"]) == pytest.approx(float(MaxGradientLoss()(fused, x)))
    assert float(out["total"]) == pytest.approx(float(paper["total"]) + 3.0 * float(out["detail"]), rel=1e-5)
