"""Fusion losses of stage 2 (FCD): similarity of the fused volume to its sources.

* :class:`FidelityLoss` -- voxel-scaled L2 distance to every source;
* :class:`BrightnessLoss` -- the "light" loss, distance to the voxel-wise brightest source;
* :class:`SourceSSIMLoss` -- negative mean 3-D SSIM against the sources (MONAI's ``SSIMLoss``
  statistics, filtered separably).

``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``, spatial ``(z, y, x)``,
intensities in ``[0, 1]``. The norm-based terms are scaled by ``1 / (D * H * W)`` (see
:mod:`nslfcore.losses`).
"""

from __future__ import annotations

import torch
from monai.networks.layers import separable_filtering
from torch import nn

from nslfcore.losses.utils import Reduction, _check_fused_sources, _check_reduction, _reduce, _voxels


def _item_norm(diff: torch.Tensor) -> torch.Tensor:
    """L2 norm of each batch item of ``diff`` ``(B, ...)``, flattened: ``(B,)``."""
    return torch.linalg.vector_norm(diff.flatten(1), dim=1)


class FidelityLoss(nn.Module):
    """Fidelity of the fused volume to every source (stage 2, public code form).

    ``L_b = (1 / (D*H*W)) * mean_i || fused_b - x_bi ||_2`` (L2 norm, not squared, over the volume).

    ``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``, intensities in
    ``[0, 1]``. Returns intensity units per voxel.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "FidelityLoss")
        per_source = torch.linalg.vector_norm((fused - sources).flatten(2), dim=2)  # (B, M)
        return _reduce(per_source.mean(dim=1) / _voxels(fused), self.reduction)


class BrightnessLoss(nn.Module):
    """The "light" (brightness) loss: keep the fused volume as bright as the brightest source.

    ``L_b = (1 / (D*H*W)) * || fused_b - max_i x_bi ||_2`` with the maximum taken voxel-wise over the
    sources (public code weight 5).

    ``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "BrightnessLoss")
        brightest = sources.max(dim=1, keepdim=True).values
        return _reduce(_item_norm(fused - brightest) / _voxels(fused), self.reduction)


class SourceSSIMLoss(nn.Module):
    """Negative mean 3-D SSIM between the fused volume and the sources (stage 2).

    ``L_b = - mean_i SSIM(fused_b, x_bi)``, in ``[-1, 1]``, minimum ``-1`` when the fused volume equals
    every source. (The sign follows the public code's ``- 5 * SSIM``; MONAI's ``SSIMLoss`` returns
    ``1 - SSIM``, which differs by the constant 1.)

    SSIM is the one of ``monai.losses.SSIMLoss(spatial_dims=3)``: Gaussian window ``win_size`` (11)
    with ``sigma`` 1.5, ``k1 = 0.01``, ``k2 = 0.03``, ``data_range`` 1, population (biased)
    variances, averaged over the voxels whose whole window lies inside the volume ("valid"
    region). This equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``, which also averages over that interior. The public
    code's SSIM3D instead zero-pads and averages over every voxel, so it differs near the borders.

    Speed: MONAI's ``SSIMLoss`` convolves with the full ``11^3`` kernel (1331 taps, and a slow
    grouped 3-D convolution on CPU). The Gaussian is separable, so the five local statistics
    (means, variances, covariance) of all sources are filtered here in one call of MONAI's
    ``separable_filtering`` (3 x 11 taps) and cropped to the valid region: the same numbers
    (tested against ``SSIMLoss`` to 1e-5) for about 1/40 of the work. Computed in float32.

    ``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)`` in ``[0, data_range]``;
    every spatial size must be at least ``win_size``.
    """

    kernel: torch.Tensor  # the 1-D Gaussian window (a non-persistent buffer)

    def __init__(
        self, win_size: int = 11, sigma: float = 1.5, data_range: float = 1.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.win_size = win_size
        self.c1 = (0.01 * data_range) ** 2
        self.c2 = (0.03 * data_range) ** 2
        offsets = torch.arange((1 - win_size) / 2, (1 + win_size) / 2, 1.0)
        gauss = torch.exp(-((offsets / sigma) ** 2) / 2)
        self.register_buffer("kernel", gauss / gauss.sum(), persistent=False)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "SourceSSIMLoss")
        if min(fused.shape[2:]) < self.win_size:
            raise ValueError(
                f"SourceSSIMLoss needs every spatial size >= {self.win_size}, got {tuple(fused.shape[2:])}."
            )
        f = fused.float().expand_as(sources)
        x = sources.float()
        stats = torch.cat((f, x, f * f, x * x, f * x), dim=1)  # (B, 5M, D, H, W)
        kernel = self.kernel.to(stats.device)
        filtered = separable_filtering(stats, [kernel] * 3)  # zero-padded "same" output
        r = self.win_size // 2
        if r:
            filtered = filtered[..., r:-r, r:-r, r:-r]  # the valid region, as SSIMLoss
        mu_f, mu_x, ff, xx, fx = filtered.chunk(5, dim=1)
        var_f, var_x, cov = ff - mu_f**2, xx - mu_x**2, fx - mu_f * mu_x
        ssim = ((2 * mu_f * mu_x + self.c1) * (2 * cov + self.c2)) / (
            (mu_f**2 + mu_x**2 + self.c1) * (var_f + var_x + self.c2)
        )
        return _reduce(-ssim.flatten(1).mean(dim=1), self.reduction)
