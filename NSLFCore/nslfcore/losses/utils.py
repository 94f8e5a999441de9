"""Helpers shared by the loss terms of :mod:`nslfcore.losses`.

* :data:`Reduction` and the MONAI-style reduction of a ``(B,)`` tensor of per-batch-item losses
  (``"mean"`` over the batch, ``"sum"``, or ``"none"`` for ``(B,)``);
* the voxel count of a tensor's spatial axes, the factor of the norm-based terms;
* the shape check of the terms that compare one fused (or warped) volume ``(B, 1, D, H, W)`` with
  the sources ``(B, M, D, H, W)``, spatial axes ``(z, y, x)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from monai.utils import LossReduction

Reduction = Literal["mean", "sum", "none"]


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a ``(B,)`` tensor of per-batch-item losses MONAI-style."""
    if reduction == LossReduction.MEAN.value:
        return per_item.mean()
    if reduction == LossReduction.SUM.value:
        return per_item.sum()
    if reduction == LossReduction.NONE.value:
        return per_item
    raise ValueError(f'Unsupported reduction {reduction!r}; use "mean", "sum" or "none".')


def _check_reduction(reduction: str) -> str:
    return LossReduction(reduction).value


def _voxels(t: torch.Tensor, first_spatial: int = 2) -> int:
    """Number of voxels of ``t``'s spatial axes (``first_spatial`` onwards)."""
    return math.prod(t.shape[first_spatial:])


def _check_fused_sources(fused: torch.Tensor, sources: torch.Tensor, name: str) -> None:
    if fused.ndim != 5 or fused.shape[1] != 1:
        raise ValueError(f"{name} expects a fused volume of shape (B, 1, D, H, W), got {tuple(fused.shape)}.")
    if sources.ndim != 5 or sources.shape[0] != fused.shape[0] or sources.shape[2:] != fused.shape[2:]:
        raise ValueError(
            f"{name} expects sources (B, M, D, H, W) matching the fused volume {tuple(fused.shape)}, "
            f"got {tuple(sources.shape)}."
        )
