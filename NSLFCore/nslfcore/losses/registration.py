"""Registration losses of stage 2 (GMN): alignment of the warped fused volume, smoothness of the DVF.

* :class:`SourceLNCCLoss` -- negative local squared NCC of the GMN-warped fused volume
  ``(B, 1, D, H, W)`` against each source ``(B, M, D, H, W)`` (MONAI's
  ``LocalNormalizedCrossCorrelationLoss``);
* :class:`DVFSmoothnessLoss` -- mean squared finite differences of the displacement field
  ``(B, 3, D, H, W)`` (components and spatial axes ``(z, y, x)``, voxel units).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from torch import nn

from nslfcore.losses.utils import Reduction, _check_fused_sources, _check_reduction, _reduce


class SourceLNCCLoss(nn.Module):
    """Local NCC between the GMN-warped fused volume and each source (stage 2 registration term).

    ``L_b = mean_i LNCC(warped_b, x_bi)`` where ``LNCC`` is
    ``monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=9)`` (rectangular
    9^3 window, zero padding, same-size output): the NEGATIVE local squared zero-normalised
    cross-correlation averaged over voxels, in ``[-1, 0]``, ``-1`` for perfectly (locally linearly)
    matching images. The public code's ``ncc_loss`` returns ``1 - mean(cc^2)``, i.e. ``1 +`` this
    value up to its epsilon (``1e-7`` added to the variance product; MONAI clamps each local
    variance at ``smooth_dr = 1e-5``), so gradients are the same.

    ``forward(warped, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``; dimensionless.
    """

    def __init__(self, kernel_size: int = 9, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=kernel_size, reduction="none")

    def forward(self, warped: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(warped, sources, "SourceLNCCLoss")
        # Channel-wise filtering: channel i compares warped with source i.
        negative_ncc = self.lncc(warped.expand_as(sources), sources)  # (B, M, D, H, W)
        return _reduce(negative_ncc.flatten(1).mean(dim=1), self.reduction)


class DVFSmoothnessLoss(nn.Module):
    """Smoothness of the displacement field: mean squared finite differences (stage 2).

    ``L_b = mean_{direction d, component c, voxel} (d u_c / d d) ** 2`` over the three spatial
    directions and the three DVF components, in voxels^2 per voxel^2 (dimensionless for a DVF in
    voxels). For a linear ramp ``u_c = a * z`` in one component it is ``a^2 / 9``.

    * ``difference="central"`` (default): ``monai.losses.DiffusionLoss``, which uses central
      differences ``(u[i+1] - u[i-1]) / 2`` on interior voxels and SUMS the three directions; it is
      divided by 3 here to make it the mean over directions. Central differences do not see a
      one-voxel checkerboard.
    * ``difference="forward"``: forward differences ``u[i+1] - u[i]``, each direction averaged over
      its own voxels, then averaged over directions: the public code's ``gradient_loss``.

    ``forward(dvf)``: ``(B, 3, D, H, W)`` (channels along ``(z, y, x)``, voxel units); every spatial
    size must exceed 2.
    """

    def __init__(self, difference: Literal["central", "forward"] = "central", reduction: Reduction = "mean") -> None:
        super().__init__()
        if difference not in ("central", "forward"):
            raise ValueError(f'DVFSmoothnessLoss difference must be "central" or "forward", got {difference!r}.')
        self.difference = difference
        self.reduction = _check_reduction(reduction)
        self.diffusion = DiffusionLoss(reduction="none")

    def forward(self, dvf: torch.Tensor) -> torch.Tensor:
        if dvf.ndim != 5 or dvf.shape[1] != 3:
            raise ValueError(f"DVFSmoothnessLoss expects a DVF of shape (B, 3, D, H, W), got {tuple(dvf.shape)}.")
        if self.difference == "forward":
            per_direction = [dvf.diff(dim=axis).pow(2).flatten(1).mean(dim=1) for axis in (2, 3, 4)]  # (B,) each
            per_item = torch.stack(per_direction, dim=1).mean(dim=1)
        else:
            with warnings.catch_warnings():  # MONAI indexes with a list; torch warns about it
                warnings.simplefilter("ignore", UserWarning)
                summed = self.diffusion(dvf)  # (B, 3, D-2, H-2, W-2), summed over directions
            per_item = summed.flatten(1).mean(dim=1) / 3
        return _reduce(per_item, self.reduction)
