"""Segmentation outputs: network logits -> class probabilities -> internal label map, for both FSD modes.

The one place that reads a segmentation network's logits (inference, training metrics, the
baseline); ``output`` is :attr:`nslfcore.config.NSLFConfig.segmentation_output` (a network's
``segmentation_output``):

``"classes"`` (the paper)
    ``(B, 4, D, H, W)`` logits of background, NCR, ED, ET. Probabilities are their softmax; labels
    are the argmax (of the logits or of the probabilities, exactly as before region outputs).
``"regions"`` (nnU-Net's BraTS training)
    ``(B, 3, D, H, W)`` independent sigmoid logits of the nested regions WT, TC, ET
    (:data:`~nslfcore.data.labels.REGION_CHANNELS`). The region probabilities are nested first
    (``TC := max(TC, ET)``, ``WT := max(WT, TC)``), then turned into the four class probabilities
    ``background = 1 - WT``, ``NCR = TC - ET``, ``ED = WT - TC``, ``ET = ET``: non-negative, summing to
    1, and the region probabilities come back from them exactly (``WT = 1 - background``,
    ``TC = NCR + ET``). Labels threshold the regions at 0.5 and paint them as nnU-Net does
    (:func:`~nslfcore.data.labels.labels_from_regions`: ET wherever ``p_ET > 0.5``, NCR where TC
    but not ET, ED where WT but not TC); they can differ from the argmax of the class probabilities
    (e.g. ``WT = 0.7, TC = 0.6, ET = 0.45`` is NCR, whose class probability 0.15 is not the largest).

So every consumer keeps one format, four class probabilities (sliding windows average them, files
store them); only the label rule depends on the mode. Spatial axes ``(z, y, x)``.

Example:
    >>> logits = torch.tensor([4.0, 4.0, -4.0]).reshape(1, 3, 1, 1, 1)  # WT and TC on, ET off
    >>> labels_from_logits(logits, "regions").flatten().tolist()  # NCR
    [1]
    >>> class_probabilities(logits, "regions").sum(dim=1).flatten().tolist()
    [1.0]
"""

from __future__ import annotations

import torch

from nslfcore.config import SegmentationOutput
from nslfcore.data.labels import REGION_CHANNELS, REGION_LABELS, REGIONS


def _check_output(output: str) -> None:
    if output not in ("classes", "regions"):
        raise ValueError(f"segmentation output must be 'classes' or 'regions', got {output!r}.")


def class_probabilities(logits: torch.Tensor, output: SegmentationOutput) -> torch.Tensor:
    """Class probabilities ``(B, 4, ...)`` (background, NCR, ED, ET; sum 1) of logits ``(B, C, ...)``.

    ``"classes"``: the softmax over the channels; ``"regions"``: the nested region sigmoids turned
    into classes (see the module docstring).
    """
    _check_output(output)
    if output == "classes":
        return torch.softmax(logits, dim=1)
    wt, tc, et = torch.sigmoid(logits).unbind(dim=1)
    tc = torch.maximum(tc, et)
    wt = torch.maximum(wt, tc)
    return torch.stack([1 - wt, tc - et, wt - tc, et], dim=1)


def _paint(wt: torch.Tensor, tc: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """int64 labels of three boolean region masks, painted in :data:`REGION_CHANNELS` order (ET wins)."""
    labels = torch.zeros(wt.shape, dtype=torch.int64, device=wt.device)
    for region, mask in zip(REGION_CHANNELS, (wt, tc, et)):
        labels = labels.masked_fill(mask, REGION_LABELS[region])
    return labels


def labels_from_probabilities(probs: torch.Tensor, output: SegmentationOutput, channel_dim: int = 1) -> torch.Tensor:
    """int64 internal labels of class probabilities (:func:`class_probabilities`), ``channel_dim`` removed.

    ``"classes"``: the argmax; ``"regions"``: WT where ``background < 0.5``, TC where
    ``NCR + ET > 0.5``, ET where ``ET > 0.5``, painted as nnU-Net does.
    """
    _check_output(output)
    if output == "classes":
        return probs.argmax(dim=channel_dim)
    background, ncr, _, et = probs.unbind(dim=channel_dim)
    return _paint(background < 0.5, ncr + et > 0.5, et > 0.5)


def labels_from_logits(logits: torch.Tensor, output: SegmentationOutput) -> torch.Tensor:
    """int64 internal labels ``(B, ...)`` of logits ``(B, C, ...)``.

    ``"classes"``: the argmax of the logits; ``"regions"``: each region's sigmoid above 0.5, painted
    as nnU-Net does (ET implies TC implies WT).
    """
    _check_output(output)
    if output == "classes":
        return logits.argmax(dim=1)
    wt, tc, et = (torch.sigmoid(logits) > 0.5).unbind(dim=1)
    return _paint(wt, tc, et)


def region_targets(labels: torch.Tensor) -> torch.Tensor:
    """Float masks ``(B, 3, ...)`` of the regions WT, TC, ET of int64 internal labels ``(B, ...)``: the region-mode targets."""
    masks = [torch.isin(labels, torch.tensor(REGIONS[region], device=labels.device)) for region in REGION_CHANNELS]
    return torch.stack(masks, dim=1).float()
