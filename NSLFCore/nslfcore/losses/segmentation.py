"""Segmentation losses of stage 3 (FSD).

Class outputs (the paper): :class:`WeightedCrossEntropyLoss`, :class:`ForegroundDiceLoss`. Region
outputs (WT, TC, ET sigmoids, as nnU-Net trains BraTS): :class:`RegionBCELoss`, :class:`RegionDiceLoss`,
whose targets are the region masks of the labels (:func:`nslfcore.models.outputs.region_targets`).

``forward(logits, labels)``: logits ``(B, C, D, H, W)`` float and labels int64 ``(B, D, H, W)``,
spatial ``(z, y, x)``, classes 0 background, 1 NCR, 2 edema, 3 ET.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from nslfcore.losses.utils import Reduction, _check_reduction
from nslfcore.models.outputs import region_targets

#: Class weights of the stage-3 cross-entropy (background, NCR, edema, ET), as in the public code.
CLASS_WEIGHTS: tuple[float, float, float, float] = (0.2, 0.3, 0.25, 0.25)


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if logits.ndim != 5 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"{name} expects logits (B, C, D, H, W) and int64 labels (B, D, H, W), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}."
        )


class WeightedCrossEntropyLoss(nn.Module):
    """Class-weighted cross-entropy (stage 3): ``torch.nn.functional.cross_entropy(..., weight=w)``.

    ``L = sum_v w_{y_v} * (-log softmax(logits_v)[y_v]) / sum_v w_{y_v}`` over all voxels ``v`` of
    the batch (torch's weighted mean) for ``reduction="mean"``; ``"sum"`` drops the denominator;
    ``"none"`` returns ``(B, D, H, W)``. Default weights 0.2, 0.3, 0.25, 0.25 (background, NCR,
    edema, ET), as in the public code.

    ``forward(logits, labels)``: ``(B, C, D, H, W)`` float and ``(B, D, H, W)`` int64 in ``[0, C)``.
    Returns nats.
    """

    class_weights: torch.Tensor

    def __init__(self, class_weights: Sequence[float] = CLASS_WEIGHTS, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_logits_labels(logits, labels, "WeightedCrossEntropyLoss")
        if logits.shape[1] != self.class_weights.numel():
            raise ValueError(f"Got {logits.shape[1]} classes but {self.class_weights.numel()} class weights.")
        weight = self.class_weights.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, labels, weight=weight, reduction=self.reduction)


class ForegroundDiceLoss(nn.Module):
    """``1 - soft Dice`` over the foreground classes (stage 3), on softmax probabilities.

    With ``p`` the softmax of the logits and ``g`` the one-hot labels, restricted to classes
    ``1..C-1``:

    * ``average="pooled"`` (public code, default): one Dice over all foreground classes, batch
      items and voxels together: ``L = 1 - 2 * sum(p * g) / (sum(p) + sum(g) + smooth)``, with
      ``smooth = 0.01``;
    * ``average="class"``: one Dice per foreground class over the batch, averaged over classes:
      ``L = mean_c [1 - (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)]``.

    Both are ``monai.losses.DiceLoss(batch=True)`` (the pooled form on the foreground flattened into
    one channel, with ``smooth_nr = 0``, ``smooth_dr = smooth``). The result is a scalar for the
    whole batch (no per-item reduction), dimensionless in ``[0, 1]``.

    ``forward(logits, labels)``: ``(B, C, D, H, W)`` and int64 ``(B, D, H, W)`` in ``[0, C)``.
    """

    def __init__(self, average: Literal["pooled", "class"] = "pooled", smooth: float | None = None) -> None:
        super().__init__()
        if average not in ("pooled", "class"):
            raise ValueError(f'ForegroundDiceLoss average must be "pooled" or "class", got {average!r}.')
        self.average = average
        if average == "pooled":
            self.dice = DiceLoss(batch=True, smooth_nr=0.0, smooth_dr=0.01 if smooth is None else smooth)
        else:
            s = 1e-5 if smooth is None else smooth
            self.dice = DiceLoss(batch=True, smooth_nr=s, smooth_dr=s)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_logits_labels(logits, labels, "ForegroundDiceLoss")
        num_classes = logits.shape[1]
        probabilities = logits.softmax(dim=1)[:, 1:]
        one_hot = F.one_hot(labels, num_classes).movedim(-1, 1)[:, 1:].to(probabilities.dtype)
        if self.average == "pooled":
            return self.dice(probabilities.reshape(1, 1, -1), one_hot.reshape(1, 1, -1))
        return self.dice(probabilities, one_hot)


def _region_logits_targets(logits: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    _check_logits_labels(logits, labels, name)
    if logits.shape[1] != 3:
        raise ValueError(f"{name} expects three region logits (WT, TC, ET), got {logits.shape[1]} channels.")
    return region_targets(labels).to(logits.dtype)


class RegionBCELoss(nn.Module):
    """Binary cross-entropy of the three region logits (WT, TC, ET) against the labels' region masks.

    ``torch.nn.functional.binary_cross_entropy_with_logits`` averaged over regions, batch items and
    voxels for ``reduction="mean"``; ``"sum"`` sums; ``"none"`` returns ``(B, 3, D, H, W)``.

    ``forward(logits, labels)``: ``(B, 3, D, H, W)`` float and ``(B, D, H, W)`` int64 in ``[0, 4)``.
    Returns nats.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = _region_logits_targets(logits, labels, "RegionBCELoss")
        return F.binary_cross_entropy_with_logits(logits, targets, reduction=self.reduction)


class RegionDiceLoss(nn.Module):
    """``1 - soft Dice`` of each region's sigmoid (WT, TC, ET), averaged over the three regions.

    ``L = mean_r [1 - (2 * sum(p_r * g_r) + smooth) / (sum(p_r) + sum(g_r) + smooth)]`` with
    ``p_r = sigmoid(logits_r)`` and ``g_r`` the region mask, sums over batch items and voxels:
    ``monai.losses.DiceLoss(sigmoid=True, batch=True)``. A scalar, dimensionless in ``[0, 1]``.

    ``forward(logits, labels)``: ``(B, 3, D, H, W)`` float and ``(B, D, H, W)`` int64 in ``[0, 4)``.
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, _region_logits_targets(logits, labels, "RegionDiceLoss"))
