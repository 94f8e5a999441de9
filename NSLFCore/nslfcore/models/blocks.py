"""Building blocks shared by the NSLF networks, with optional convolution groups.

``groups`` lets one module hold ``groups`` independent copies of a block (one per modality), run
in a single call: tensors carry the groups as contiguous channel blocks, ``(B, groups * C, D, H, W)``.
With ``groups=1`` the blocks are the plain ones. All tensors are ``(B, C, D, H, W)`` with spatial
axes ``(z, y, x)``.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Sequential):
    """(Conv3d 3x3x3 -> BatchNorm3d -> ReLU) x 2, per group.

    Maps ``(B, groups * in_channels, D, H, W)`` to ``(B, groups * out_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1) -> None:
        g = groups
        super().__init__(
            nn.Conv3d(g * in_channels, g * out_channels, kernel_size=3, padding=1, groups=g),
            nn.BatchNorm3d(g * out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(g * out_channels, g * out_channels, kernel_size=3, padding=1, groups=g),
            nn.BatchNorm3d(g * out_channels),
            nn.ReLU(inplace=True),
        )


def cat_groups(first: torch.Tensor, second: torch.Tensor, groups: int) -> torch.Tensor:
    """Concatenate two grouped tensors channel-wise *within* each group.

    ``first`` is ``(B, g * C1, ...)`` and ``second`` ``(B, g * C2, ...)``; the result is
    ``(B, g * (C1 + C2), ...)`` whose group ``i`` is ``[first_i, second_i]``.
    """
    if groups == 1:
        return torch.cat((first, second), dim=1)
    b, spatial = first.shape[0], first.shape[2:]
    a = first.reshape(b, groups, -1, *spatial)
    c = second.reshape(b, groups, -1, *spatial)
    return torch.cat((a, c), dim=2).reshape(b, -1, *spatial)


class UpBlock(nn.Module):
    """ConvTranspose3d (k=2, s=2) up-sampling, skip concatenation ``[skip, up]``, then :class:`DoubleConv`.

    Args:
        in_channels: channels of the coarse input (per group); the up-sampling keeps them.
        skip_channels: channels of the skip connection (per group).
        out_channels: channels of the output (per group).
        groups: independent copies of the block.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, groups: int = 1) -> None:
        super().__init__()
        self.groups = groups
        self.up = nn.ConvTranspose3d(groups * in_channels, groups * in_channels, kernel_size=2, stride=2, groups=groups)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, groups)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(cat_groups(skip, self.up(coarse), self.groups))
