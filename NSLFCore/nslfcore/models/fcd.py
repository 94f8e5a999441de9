"""FCD: the paper's fusion convolutional decoder.

For every modality ``i`` the global feature is up-sampled x16 by four stages of
ConvTranspose3d(k2, s2) + Conv3d 3x3x3 + BatchNorm3d + ReLU (256->128->64->32->32 in the paper),
concatenated with that modality's local feature, and a shared Conv3d 3x3x3 + sigmoid gives a weight
map ``W_i``. Weights are normalised across modalities, ``w_i = W_i / (sum_j W_j + eps)``, and the
fused volume is ``sum_i w_i * x_i``: a voxel-wise convex combination of the sources.

A missing sequence (issue 31: any three of the four) is named by ``present``, a ``(B, M)`` boolean
mask per case: an absent modality's weight map is set to exactly 0 before the normalisation, so the
fused volume is a convex combination of the present sources only. :func:`present_channels` reads
the mask off a batch whose dropped sequences are all-zero channels (training with sequence
dropout); inference passes the case's mask instead, since a sliding window outside the brain is
all-zero in every channel without any sequence being missing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nslfcore.models.blocks import cat_channels


def present_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` boolean mask of the channels of ``x`` ``(B, C, D, H, W)`` that are not all zero (max ``|x|`` > 0).

    For training crops whose dropped sequences were set to zero after normalisation. A present
    sequence is never all zero over a crop of a brain case unless the crop lies outside the brain, where
    every channel is zero and :meth:`FusionDecoder.combine` treats all as present.

    Example:
        >>> x = torch.rand(2, 4, 8, 8, 8)
        >>> x[1, 3] = 0
        >>> present_channels(x).tolist()
        [[True, True, True, True], [True, True, True, False]]
    """
    if x.ndim < 3:
        raise ValueError(f"present_channels expects (B, C, ...) with spatial axes, got shape {tuple(x.shape)}.")
    return x.detach().flatten(2).abs().amax(dim=2) > 0


def check_present(present: torch.Tensor | None, batch: int, channels: int) -> None:
    """Raise ``ValueError`` unless ``present`` is ``None`` or a ``(batch, channels)`` boolean mask."""
    if present is None:
        return
    if not isinstance(present, torch.Tensor) or present.dtype != torch.bool or tuple(present.shape) != (batch, channels):
        shape = tuple(present.shape) if isinstance(present, torch.Tensor) else type(present).__name__
        raise ValueError(f"present must be a ({batch}, {channels}) boolean tensor (modalities present per case), got {shape}.")


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

    ``forward(global_features, local_features, sources, present=None)`` takes ``(B, M, w4, D/16, H/16, W/16)``,
    ``(B, M, w0, D, H, W)``, ``(B, M, D, H, W)`` and the ``(B, M)`` mask of present modalities (see :meth:`combine`).
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

    def combine(self, raw: torch.Tensor, sources: torch.Tensor, present: torch.Tensor | None = None) -> FusionOutput:
        """Normalise ``raw`` ``(B, M, D, H, W)`` across modalities and fuse ``sources`` ``(B, M, D, H, W)``.

        ``present`` ``(B, M)`` bool (``None``: all present): an absent modality's raw weight is set to
        exactly 0 first, so its normalised weight is 0 and the others sum to 1 (up to ``eps``). A
        case with no modality present keeps all four (nothing to choose from). The one place every
        forward path (whole, one modality at a time, windows, training) normalises the weights.
        """
        if present is not None:
            check_present(present, raw.shape[0], raw.shape[1])
            keep = present | ~present.any(dim=1, keepdim=True)
            raw = raw * keep.to(raw.dtype)[(..., *(None,) * (raw.ndim - 2))]
        weights = raw / (raw.sum(dim=1, keepdim=True) + self.eps)
        fused = (weights * sources).sum(dim=1, keepdim=True)
        return FusionOutput(fused=fused, weights=weights)

    def forward(
        self, global_features: torch.Tensor, local_features: torch.Tensor, sources: torch.Tensor,
        present: torch.Tensor | None = None,
    ) -> FusionOutput:  # fmt: skip
        b, m = global_features.shape[:2]
        raw = self.raw_weight(global_features.flatten(0, 1), local_features.flatten(0, 1))  # modalities on the batch axis
        return self.combine(raw.reshape(b, m, *raw.shape[2:]), sources, present)
