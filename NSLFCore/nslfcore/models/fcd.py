"""FCD: the paper's fusion convolutional decoder.

For every modality ``i`` the global feature is up-sampled x16 by four stages of
ConvTranspose3d(k2, s2) + Conv3d 3x3x3 + BatchNorm3d + ReLU (256->128->64->32->32 in the paper),
concatenated with that modality's local feature, and a shared Conv3d 3x3x3 + sigmoid gives a weight
map ``W_i``. Weights are normalised across modalities, ``w_i = W_i / (sum_j W_j + eps)``, and the
fused volume is ``sum_i w_i * x_i``: a voxel-wise convex combination of the sources.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nslfcore.models.blocks import cat_channels


class FusionOutput(NamedTuple):
    """Attributes:
    fused: ``(B, 1, D, H, W)``, spatial ``(z, y, x)``, same units as the sources.
    weights: ``(B, M, D, H, W)`` normalised weight maps (sum over ``M`` is 1 up to ``eps``).
    """

    fused: torch.Tensor
    weights: torch.Tensor


class FusionDecoder(nn.Module):
    """FCD.

    Args:
        widths: the CU-Net widths ``(w0, ..., w4)``; the up-sampler goes
            ``w4 -> w2 -> w1 -> w0 -> w0`` (256->128->64->32->32 in the paper).
        eps: epsilon of the weight normalisation.

    ``forward(global_features, local_features, sources)`` takes ``(B, M, w4, D/16, H/16, W/16)``,
    ``(B, M, w0, D, H, W)`` and ``(B, M, D, H, W)``.
    """

    def __init__(self, widths: tuple[int, int, int, int, int], eps: float = 1e-7) -> None:
        super().__init__()
        w = widths
        stages: list[nn.Module] = []
        channels = w[4]
        for out in (w[2], w[1], w[0], w[0]):
            stages += [
                nn.ConvTranspose3d(channels, channels, kernel_size=2, stride=2),
                nn.Conv3d(channels, out, kernel_size=3, padding=1),
                nn.BatchNorm3d(out),
                nn.ReLU(),
            ]
            channels = out
        self.upsample = nn.Sequential(*stages)
        self.weight_head = nn.Sequential(nn.Conv3d(2 * w[0], 1, kernel_size=3, padding=1), nn.Sigmoid())
        self.eps = eps

    def raw_weight(self, global_features: torch.Tensor, local_features: torch.Tensor) -> torch.Tensor:
        """Unnormalised weight maps ``(N, 1, D, H, W)`` of ``N`` images: ``(N, w4, D/16, ...)`` and ``(N, w0, D, H, W)`` in."""
        up = self.upsample(global_features)
        return self.weight_head(cat_channels([up, local_features]))

    def combine(self, raw: torch.Tensor, sources: torch.Tensor) -> FusionOutput:
        """Normalise ``raw`` ``(B, M, D, H, W)`` across modalities and fuse ``sources`` ``(B, M, D, H, W)``."""
        weights = raw / (raw.sum(dim=1, keepdim=True) + self.eps)
        fused = (weights * sources).sum(dim=1, keepdim=True)
        return FusionOutput(fused=fused, weights=weights)

    def forward(
        self, global_features: torch.Tensor, local_features: torch.Tensor, sources: torch.Tensor
    ) -> FusionOutput:
        b, m = global_features.shape[:2]
        raw = self.raw_weight(global_features.flatten(0, 1), local_features.flatten(0, 1))  # modalities on the batch axis
        return self.combine(raw.reshape(b, m, *raw.shape[2:]), sources)
