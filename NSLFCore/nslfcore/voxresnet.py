"""VoxResNet: the deep voxel-wise residual network of Chen et al. (2018), one of the paper's segmentation baselines.

H. Chen, Q. Dou, L. Yu, J. Qin, P.-A. Heng, "VoxResNet: Deep voxelwise residual networks for brain
segmentation from 3D MR images", NeuroImage 170 (2018) 446-455. MONAI has no VoxResNet; this is
a small implementation written from the paper's description (its Fig. 2):

* stem ``conv1a``, ``conv1b`` (3x3x3, ``widths[0]`` channels, each followed by BatchNorm and ReLU);
* three down-sampling stages, each a 3x3x3 convolution of stride 2 to ``widths[1]`` channels
  (``conv1c``, ``conv4``, ``conv7``; the last two after BatchNorm and ReLU) and two VoxRes modules;
* a VoxRes module (:class:`VoxRes`) is a pre-activation residual unit,
  ``x + conv(relu(bn(conv(relu(bn(x))))))`` with 3x3x3 convolutions of constant width;
* four auxiliary classifiers C1-C4 on the outputs of ``conv1b`` (full resolution) and of VoxRes
  modules 3, 6 and 9 (1/2, 1/4, 1/8 resolution), each mapping its features to class scores at the
  input resolution; the network's output is their sum.

Choices the paper leaves open, made here: C1 is a 1x1x1 convolution; C2-C4 are transposed
convolutions straight to the classes with kernel ``2s`` and stride ``s`` for a scale factor ``s``
(overlapping, so the upsampling is smooth rather than blocky); the auxiliary classifiers'
deep-supervision losses are not used, the baseline is trained on the summed output with the same
loss as every other segmentation baseline (:mod:`nslfcore.segmentation_baselines`). The paper's
widths ``(32, 64)`` give 2.8 M parameters with four classes, close to NSLF's 3.4 M, so the baseline
keeps them.

Tensors are ``(B, C, D, H, W)`` with spatial axes ``(z, y, x)``; spatial sizes must be multiples
of 8 (three halvings).
"""

from __future__ import annotations

import torch
from torch import nn

#: The widths of the paper (stem, residual stages).
PAPER_WIDTHS: tuple[int, int] = (32, 64)


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels), nn.ReLU(inplace=True)]


class VoxRes(nn.Module):
    """A VoxRes module: ``x + F(x)`` with ``F`` = (BatchNorm, ReLU, 3x3x3 conv) x 2, ``(B, C, D, H, W)`` -> same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *_bn_relu(channels),
            nn.Conv3d(channels, channels, kernel_size=3, padding=1),
            *_bn_relu(channels),
            nn.Conv3d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


def _classifier(channels: int, classes: int, scale: int) -> nn.Module:
    """Class scores at ``scale`` times the resolution of ``(B, channels, ...)`` features."""
    if scale == 1:
        return nn.Conv3d(channels, classes, kernel_size=1)
    return nn.ConvTranspose3d(channels, classes, kernel_size=2 * scale, stride=scale, padding=scale // 2)


class VoxResNet(nn.Module):
    """VoxResNet (Chen et al. 2018): ``(B, in_channels, D, H, W)`` -> logits ``(B, out_channels, D, H, W)``.

    Args:
        in_channels: input channels (modalities).
        out_channels: classes.
        widths: ``(stem, residual)`` channels; the paper's are :data:`PAPER_WIDTHS`.

    Example:
        >>> net = VoxResNet(4, 4, (32, 64))
        >>> tuple(net(torch.rand(1, 4, 16, 16, 16)).shape)
        (1, 4, 16, 16, 16)
    """

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, int] = PAPER_WIDTHS) -> None:
        super().__init__()
        stem, width = (int(w) for w in widths)
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem, kernel_size=3, padding=1),  # conv1a
            *_bn_relu(stem),
            nn.Conv3d(stem, stem, kernel_size=3, padding=1),  # conv1b
            *_bn_relu(stem),
        )
        self.stages = nn.ModuleList()
        for index in range(3):  # conv1c + VoxRes 2, 3; conv4 + VoxRes 5, 6; conv7 + VoxRes 8, 9
            pre = [] if index == 0 else _bn_relu(width)
            down = nn.Conv3d(stem if index == 0 else width, width, kernel_size=3, stride=2, padding=1)
            self.stages.append(nn.Sequential(*pre, down, VoxRes(width), VoxRes(width)))
        self.classifiers = nn.ModuleList(
            [_classifier(stem, out_channels, 1)] + [_classifier(width, out_channels, 2**k) for k in (1, 2, 3)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 8 for s in x.shape[2:]):
            raise ValueError(f"VoxResNet needs spatial sizes that are multiples of 8, got {tuple(x.shape[2:])}.")
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        logits = self.classifiers[0](features[0])
        for classifier, feature in zip(self.classifiers[1:], features[1:]):
            logits = logits + classifier(feature)
        return logits
