"""Building blocks shared by the NSLF networks, with optional convolution groups.

``groups`` lets one module hold ``groups`` independent copies of a block (one per modality), run
in a single call: tensors carry the groups as contiguous channel blocks, ``(B, groups * C, D, H, W)``.
With ``groups=1`` the blocks are the plain ones. All tensors are ``(B, C, D, H, W)`` with spatial
axes ``(z, y, x)``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
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
    channels_last = torch.channels_last_3d
    if first.is_contiguous(memory_format=channels_last) and second.is_contiguous(memory_format=channels_last):
        return _cat_groups_channels_last(first, second, groups)
    b, spatial = first.shape[0], first.shape[2:]
    a = first.reshape(b, groups, -1, *spatial)
    c = second.reshape(b, groups, -1, *spatial)
    return torch.cat((a, c), dim=2).reshape(b, -1, *spatial)


def cat_channels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)`` of ``(B, C_i, D, H, W)`` tensors; channels-last-3d when the first one is.

    Then the result is written once into channels-last memory, whatever the other inputs' layout
    (e.g. a per-modality view of a grouped feature): ``torch.cat`` would give a contiguous result
    the next convolution converts again (together about 2x slower on a CPU, measured). Same values.
    """
    first = tensors[0]
    if first.dim() != 5 or first.is_contiguous() or not first.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.cat(tensors, dim=1)
    b, _, d, h, w = first.shape
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    out = torch.empty((b, d, h, w, sum(t.shape[1] for t in tensors)), dtype=dtype, device=first.device)
    start = 0
    for t in tensors:
        out[..., start : start + t.shape[1]] = t.permute(0, 2, 3, 4, 1)
        start += t.shape[1]
    return out.permute(0, 4, 1, 2, 3)


def _cat_groups_channels_last(first: torch.Tensor, second: torch.Tensor | list[torch.Tensor], groups: int) -> torch.Tensor:
    """:func:`cat_groups` of channels-last-3d tensors, written once into a channels-last result.

    ``second`` is one grouped tensor or its ``groups`` parts (``(B, C2, D, H, W)`` each). In
    channels-last memory the channels are the innermost axis, ``(B, D, H, W, g * C)``, so grouping
    them is a view and the interleaving is strided copies (the generic reshape path copies each
    input out of channels-last first: about 4x slower on a CPU, measured).
    """
    b, c1, d, h, w = first.shape
    parts = second if isinstance(second, list) else list(second.chunk(groups, dim=1))
    per1, per2 = c1 // groups, parts[0].shape[1]
    out = torch.empty((b, d, h, w, groups, per1 + per2), dtype=torch.result_type(first, parts[0]), device=first.device)
    out[..., :per1] = first.permute(0, 2, 3, 4, 1).view(b, d, h, w, groups, per1)
    for i, part in enumerate(parts):
        out[..., i, per1:] = part.permute(0, 2, 3, 4, 1)
    return out.view(b, d, h, w, groups * (per1 + per2)).permute(0, 4, 1, 2, 3)


class GroupedUpsample(nn.ConvTranspose3d):
    """``ConvTranspose3d(kernel_size=2, stride=2, groups=groups)`` that runs each group as its own call.

    The same parameters and the same result as the grouped layer (each output group depends only on
    its input group), but oneDNN has no fast grouped transposed 3-D convolution: under bf16 the
    grouped call falls back to a reference kernel about 6x slower than four plain ones (measured).
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__(channels, channels, kernel_size=2, stride=2, groups=groups)

    def group_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each group, ``(B, C / groups, 2D, 2H, 2W)``, in order."""
        per = self.in_channels // self.groups
        bias = self.bias
        return [
            F.conv_transpose3d(x[:, i * per : (i + 1) * per], self.weight[i * per : (i + 1) * per],
                               None if bias is None else bias[i * per : (i + 1) * per], stride=2)
            for i in range(self.groups)
        ]  # fmt: skip

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.groups == 1 or output_size is not None:
            return super().forward(x, output_size)
        return torch.cat(self.group_outputs(x), dim=1)


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
        self.up = GroupedUpsample(groups * in_channels, groups)
        self.conv = DoubleConv(in_channels + skip_channels, out_channels, groups)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.groups > 1 and skip.is_contiguous(memory_format=torch.channels_last_3d):
            # each group's up-sampled output goes straight into its place next to its skip
            return self.conv(_cat_groups_channels_last(skip, self.up.group_outputs(coarse), self.groups))
        return self.conv(cat_groups(skip, self.up(coarse), self.groups))
