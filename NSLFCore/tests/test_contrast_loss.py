"""The contrast-preservation loss (nslfcore.losses.contrast), an optional stage-2 term keeping the lesion conspicuous."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nslfcore.data.phantom import make_tiny_phantom
from nslfcore.data.transforms import brain_mask, normalize
from nslfcore.losses import ContrastPreservationLoss, Stage2Loss
from nslfcore.losses.contrast import EPS
from nslfcore.losses.weights import Stage2LossWeights


def _phantom_sources(seed: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    """Normalised sources ``(1, 4, z, y, x)`` of a tiny lesion phantom and its whole-tumour mask."""
    case = make_tiny_phantom(seed=seed).case
    stack = case.stacked()
    return torch.from_numpy(normalize(stack, brain_mask(stack)))[None].float(), case.label > 0


def _local_std_reference(volume: np.ndarray, win_size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Independent local standard deviation: scipy's Gaussian (radius ``win_size // 2``), valid region only."""
    r = win_size // 2
    v = volume.astype(np.float64)
    mean = ndimage.gaussian_filter(v, sigma, truncate=r / sigma, mode="constant")
    mean_sq = ndimage.gaussian_filter(v * v, sigma, truncate=r / sigma, mode="constant")
    valid = tuple(slice(r, n - r) for n in v.shape)
    return np.sqrt(np.maximum(mean_sq - mean**2, 0.0) + EPS)[valid]


def test_local_std_and_value_equal_an_independent_reference():
    sources, _ = _phantom_sources()
    loss = ContrastPreservationLoss()
    x = sources[0].numpy()
    per_source = np.stack([_local_std_reference(s) for s in x])
    np.testing.assert_allclose(loss.local_std(sources)[0].numpy(), per_source, atol=2e-5)
    fused = x.mean(axis=0)
    expected = np.maximum(per_source.max(axis=0) - _local_std_reference(fused), 0.0).mean()
    assert float(loss(sources.mean(dim=1, keepdim=True), sources)) == pytest.approx(expected, rel=1e-4)


def test_zero_for_the_most_contrasted_source_positive_for_the_plain_mean():
    sources, wt = _phantom_sources()
    loss = ContrastPreservationLoss()
    # scaled copies: the largest scale has the most local contrast at every voxel
    base = sources[:, 3:4]
    scaled = torch.cat((0.3 * base, 0.9 * base + 0.05, 0.5 * base), dim=1)
    assert float(loss(scaled[:, 1:2], scaled)) == pytest.approx(0.0, abs=1e-8)
    # an offset leaves the local contrast as it is, up to float32 rounding of E[v^2] - E[v]^2
    assert float(loss(scaled[:, 1:2] - 0.05, scaled)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(scaled[:, 0:1], scaled)) > 1e-3
    # the lesion phantom: the plain mean flattens what single sources show
    mean = sources.mean(dim=1, keepdim=True).requires_grad_(True)
    value = loss(mean, sources)
    assert value.item() > 1e-3
    value.backward()
    assert mean.grad is not None and float(mean.grad.abs().sum()) > 0
    # at the lesion's border the mean keeps under 3/4 of the largest source contrast (WT: label > 0)
    shortfall = torch.relu(loss.local_std(sources).amax(dim=1) - loss.local_std(mean.detach())[:, 0])[0].numpy()
    r = loss.win_size // 2
    border = (ndimage.binary_dilation(wt, iterations=2) & ~ndimage.binary_erosion(wt, iterations=2))[r:-r, r:-r, r:-r]
    largest = loss.local_std(sources).amax(dim=1)[0].numpy()
    assert border.sum() > 100 and shortfall[border].mean() > 0.25 * largest[border].mean()


def test_checks_and_reductions():
    loss = ContrastPreservationLoss(win_size=5)
    fused, sources = torch.rand(2, 1, 6, 6, 6), torch.rand(2, 3, 6, 6, 6)
    per_item = ContrastPreservationLoss(win_size=5, reduction="none")(fused, sources)
    assert per_item.shape == (2,) and float(loss(fused, sources)) == pytest.approx(float(per_item.mean()))
    with pytest.raises(ValueError, match=">= 5"):
        loss(torch.zeros(1, 1, 4, 6, 6), torch.zeros(1, 2, 4, 6, 6))
    with pytest.raises(ValueError, match="odd win_size"):
        ContrastPreservationLoss(win_size=4)


def test_stage2_adds_the_term_only_when_weighted():
    x = torch.rand(1, 4, 12, 12, 12)
    fused = x.mean(dim=1, keepdim=True)
    paper = Stage2Loss(Stage2LossWeights(ncc=0, smooth=0))(x, fused)
    assert "contrast" not in paper and Stage2LossWeights().contrast == 0.0
    out = Stage2Loss(Stage2LossWeights(ncc=0, smooth=0, contrast=2.0))(x, fused)
    assert float(out["contrast"]) == pytest.approx(float(ContrastPreservationLoss()(fused, x)))
    assert float(out["total"]) == pytest.approx(float(paper["total"]) + 2.0 * float(out["contrast"]), rel=1e-5)
