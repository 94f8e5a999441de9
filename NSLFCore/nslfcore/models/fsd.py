"""FSD: the paper's fusion-driven segmentation decoder.

The four modalities' local features are concatenated (``4 * w0`` channels), two double
convolutions (Conv3d 3x3x3 + BatchNorm3d + ReLU, x2 each) reduce them to ``64`` then ``32``
channels (paper widths), the fused volume is concatenated (``32 + 1`` channels) and a 1x1x1
convolution gives the class logits (background, NCR, ED, ET).

With ``fused_only=True`` (the paper's ablation) the FSD sees only the fused volume.

With ``stride=2`` (the ``fast`` configuration) the local features live on the 2x coarser grid: the
double convolutions run there (on the average-pooled fused volume when ``fused_only``), their output
is up-sampled to the input grid by a transposed convolution (kernel and stride 2, as the FCD
up-samples), and one refinement block (Conv3d 3x3x3 + BatchNorm3d +
ReLU) sees it together with the fused volume and the four sources at full resolution before the
1x1x1 classifier, so that boundaries are decided on the input grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        stride: voxel stride of the local features' grid relative to the input (1 or 2).

    ``forward(local_features, fused, sources=None)`` takes ``(B, M, w0, D/s, H/s, W/s)``
    (concatenated in modality order), ``(B, 1, D, H, W)`` and, with ``stride > 1``, the sources
    ``(B, M, D, H, W)``; it returns logits ``(B, num_classes, D, H, W)``. Spatial axes ``(z, y, x)``.
    """

    def __init__(
        self,
        local_width: int,
        num_modalities: int = 4,
        widths: tuple[int, int] = (64, 32),
        num_classes: int = 4,
        fused_only: bool = False,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.fused_only = fused_only
        self.stride = stride
        in_channels = 1 if fused_only else num_modalities * local_width
        self.blocks = nn.Sequential(DoubleConv(in_channels, widths[0]), DoubleConv(widths[0], widths[1]))
        self.upsample = nn.ConvTranspose3d(widths[1], widths[1], kernel_size=stride, stride=stride) if stride > 1 else None
        self.refine = (
            nn.Sequential(
                nn.Conv3d(widths[1] + 1 + num_modalities, widths[1], kernel_size=3, padding=1, bias=False),
                nn.BatchNorm3d(widths[1]),
                nn.ReLU(inplace=True),
            )
            if stride > 1
            else None
        )
        # At stride 1 the classifier sees the fused volume beside the features (the paper); at stride
        # 2 the refinement block has already seen it, on the same grid.
        self.classifier = nn.Conv3d(widths[1] + (1 if stride == 1 else 0), num_classes, kernel_size=1)

    def forward(self, local_features: torch.Tensor, fused: torch.Tensor, sources: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused_only:
            x = F.avg_pool3d(fused, self.stride) if self.stride > 1 else fused
        else:
            x = local_features.flatten(1, 2)
        h = self.blocks(x)
        if self.upsample is not None and self.refine is not None:
            if sources is None:
                raise ValueError("An FSD with stride > 1 refines on the sources: pass them (B, M, D, H, W).")
            h = self.upsample(h)
            if h.shape[2:] != fused.shape[2:]:
                raise ValueError(f"FSD features {tuple(h.shape[2:])} do not match the fused volume {tuple(fused.shape[2:])}.")
            return self.classifier(self.refine(cat_channels([h, fused, sources])))
        return self.classifier(cat_channels([h, fused]))
