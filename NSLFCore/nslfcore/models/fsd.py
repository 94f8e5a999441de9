"""FSD: the paper's fusion-driven segmentation decoder.

The four modalities' local features are concatenated (``4 * w0`` channels), two double
convolutions (Conv3d 3x3x3 + BatchNorm3d + ReLU, x2 each) reduce them to ``64`` then ``32``
channels (paper widths), the fused volume is concatenated (``32 + 1`` channels) and a 1x1x1
convolution gives the class logits (background, NCR, ED, ET).

With ``fused_only=True`` (the paper's ablation) the FSD sees only the fused volume.
"""

from __future__ import annotations

import torch
from torch import nn

from nslfcore.models.blocks import DoubleConv, cat_channels


class SegmentationDecoder(nn.Module):
    """FSD.

    Args:
        local_width: channels of one modality's local feature (``w0``).
        num_modalities: number of modalities whose features are concatenated.
        widths: channels of the two double-convolution blocks.
        num_classes: output classes.
        fused_only: ablation: ignore the features and segment from the fused volume alone.

    ``forward(local_features, fused)`` takes ``(B, M, w0, D, H, W)`` (concatenated in modality
    order) and ``(B, 1, D, H, W)`` and returns logits ``(B, num_classes, D, H, W)``.
    """

    def __init__(
        self,
        local_width: int,
        num_modalities: int = 4,
        widths: tuple[int, int] = (64, 32),
        num_classes: int = 4,
        fused_only: bool = False,
    ) -> None:
        super().__init__()
        self.fused_only = fused_only
        in_channels = 1 if fused_only else num_modalities * local_width
        self.blocks = nn.Sequential(DoubleConv(in_channels, widths[0]), DoubleConv(widths[0], widths[1]))
        self.classifier = nn.Conv3d(widths[1] + 1, num_classes, kernel_size=1)

    def forward(self, local_features: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        x = fused if self.fused_only else local_features.flatten(1, 2)
        return self.classifier(cat_channels([self.blocks(x), fused]))
