"""Contrast preservation for stage 2 (beyond the paper, issue 31 point 5): a fusion that never hides the lesion.

A voxel-wise convex combination of sources in which a lesion is dark (T1) and bright (T2, FLAIR)
can cancel the lesion's contrast: the plain mean keeps a fraction of the best source's
contrast-to-noise (:mod:`nslfcore.metrics.conspicuity`). Stage 2 has no labels, so this term asks,
label-free, for the fused volume's local contrast to reach the largest local contrast among the
sources at every voxel, as :class:`~nslfcore.losses.fusion.BrightnessLoss` asks for the largest
intensity::

    s_v = sqrt(max(G * v^2 - (G * v)^2, 0) + eps)          (local standard deviation of volume v)
    L_b = mean_{valid voxels} relu(max_i s_{x_bi} - s_{fused_b})

``G`` the Gaussian window of :class:`~nslfcore.losses.fusion.SourceSSIMLoss` (``win_size`` 11 taps,
``sigma`` 1.5 voxels, normalised to sum 1, the same 1-D kernel along z, y and x, applied with
MONAI's ``separable_filtering``), averaged over the voxels whose whole window lies inside the
volume; ``eps = 1e-6`` keeps the square root differentiable at 0. Intensity units (``[0, 1]``
sources). It is 0 where the fused volume is locally at least as contrasted as every source (e.g.
where it equals the most contrasted one), and grows where fusion flattens an edge -- the lesion's
border above all -- that a source shows.

``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``, spatial ``(z, y, x)``.
Off by default (``Stage2LossWeights.contrast = 0``); ``nslf train --loss-weight stage2.contrast=W``.
"""

from __future__ import annotations

import torch
from monai.networks.layers import separable_filtering
from torch import nn

from nslfcore.losses.utils import Reduction, _check_fused_sources, _check_reduction, _reduce

#: Added to the local variance under the square root (intensity units squared).
EPS: float = 1e-6


class ContrastPreservationLoss(nn.Module):
    """Local contrast of the fused volume below the most contrasted source's (see the module).

    Args:
        win_size: odd Gaussian window size in voxels (11).
        sigma: Gaussian standard deviation in voxels (1.5).
        reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"`` (``(B,)``).
    """

    kernel: torch.Tensor  # the 1-D Gaussian window (a non-persistent buffer)

    def __init__(self, win_size: int = 11, sigma: float = 1.5, reduction: Reduction = "mean") -> None:
        super().__init__()
        if win_size < 1 or win_size % 2 != 1:
            raise ValueError(f"ContrastPreservationLoss needs an odd win_size >= 1, got {win_size}.")
        self.reduction = _check_reduction(reduction)
        self.win_size = win_size
        offsets = torch.arange((1 - win_size) / 2, (1 + win_size) / 2, 1.0)
        gauss = torch.exp(-((offsets / sigma) ** 2) / 2)
        self.register_buffer("kernel", gauss / gauss.sum(), persistent=False)

    def local_std(self, volume: torch.Tensor) -> torch.Tensor:
        """``s_v`` of every channel of ``(B, C, D, H, W)``, cropped to the valid region ``(B, C, D-2r, H-2r, W-2r)``."""
        v = volume.float()
        kernel = self.kernel.to(v.device)
        filtered = separable_filtering(torch.cat((v, v * v), dim=1), [kernel] * 3)
        r = self.win_size // 2
        if r:
            filtered = filtered[..., r:-r, r:-r, r:-r]
        mean, mean_sq = filtered.chunk(2, dim=1)
        return torch.sqrt((mean_sq - mean**2).clamp_min(0.0) + EPS)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "ContrastPreservationLoss")
        if min(fused.shape[2:]) < self.win_size:
            raise ValueError(
                f"ContrastPreservationLoss needs every spatial size >= {self.win_size}, got {tuple(fused.shape[2:])}."
            )
        target = self.local_std(sources).amax(dim=1, keepdim=True)
        shortfall = torch.relu(target - self.local_std(fused))
        return _reduce(shortfall.flatten(1).mean(dim=1), self.reduction)
