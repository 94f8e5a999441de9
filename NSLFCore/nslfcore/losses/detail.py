"""Detail preservation for stage 2 (beyond the paper, issue 16 point 7): the max-gradient loss.

The paper's stage-2 terms (fidelity to every source, brightness, SSIM against every source) are
all minimised near a weighted mean of the sources, and a mean smooths away the edges that only one
modality shows (measured: the shipped fused volume scores like the plain mean of the inputs).
The fusion literature's remedy (e.g. the gradient loss of DenseFuse-style and U2Fusion/SDNet-type
methods) asks the fused image's gradient to follow the strongest source gradient at every voxel:

``L_b = mean_{voxels, axes} | d_a fused_b - g_ba |``, with ``g_ba`` the source gradient of largest
magnitude along axis ``a`` at that voxel (signed), ``d_a`` the forward difference along ``z``, ``y``
and ``x`` (the last plane of each axis dropped), intensities in ``[0, 1]`` per voxel.

``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``, spatial ``(z, y, x)``.
Off by default (``Stage2LossWeights.detail = 0``); ``nslf train --loss-weight stage2.detail=W``.
"""

from __future__ import annotations

import torch
from torch import nn

from nslfcore.losses.utils import Reduction, _check_fused_sources, _check_reduction, _reduce


def forward_differences(volume: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences of ``(B, C, D, H, W)`` along z, y and x, each cropped to ``(B, C, D-1, H-1, W-1)``."""
    v = volume
    return [
        (v[:, :, 1:, :-1, :-1] - v[:, :, :-1, :-1, :-1]),
        (v[:, :, :-1, 1:, :-1] - v[:, :, :-1, :-1, :-1]),
        (v[:, :, :-1, :-1, 1:] - v[:, :, :-1, :-1, :-1]),
    ]


class MaxGradientLoss(nn.Module):
    """L1 distance between the fused volume's gradient and the strongest source gradient (see the module)."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "MaxGradientLoss")
        if min(fused.shape[2:]) < 2:
            raise ValueError(f"MaxGradientLoss needs every spatial size >= 2, got {tuple(fused.shape[2:])}.")
        per_axis = []
        for d_fused, d_sources in zip(forward_differences(fused.float()), forward_differences(sources.float())):
            strongest = d_sources.gather(1, d_sources.abs().argmax(dim=1, keepdim=True))  # (B, 1, ...) signed
            per_axis.append((d_fused - strongest).abs().flatten(1).mean(dim=1))
        return _reduce(torch.stack(per_axis, dim=1).mean(dim=1), self.reduction)
