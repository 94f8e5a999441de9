"""Reconstruction loss of stage 1 (CU-Net pre-training): :class:`ReconstructionLoss`.

CU-Net reconstructs its input ``x`` ``(B, M, D, H, W)`` (spatial ``(z, y, x)``, intensities in
``[0, 1]``); the loss is the public code's voxel-scaled L2 norm (default) or a mean squared error.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from nslfcore.losses.utils import Reduction, _check_reduction, _reduce, _voxels


class ReconstructionLoss(nn.Module):
    """CU-Net reconstruction loss (stage 1).

    ``form="norm"`` (the public code, default):
    ``L_b = (1 / (D*H*W)) * sum_m || r_bm - x_bm ||_2`` -- the L2 norm (not squared) of each
    modality's error, summed over modalities, divided by the voxel count.
    ``form="mse"``: ``L_b = mean_{m, voxels} (r_bm - x_bm) ** 2``.

    Args:
        form: ``"norm"`` or ``"mse"``.
        reduction: over the batch (see module docstring).

    ``forward(reconstruction, x)``: both ``(B, M, D, H, W)``, intensities in ``[0, 1]``.
    Returns a scalar (``(B,)`` for ``reduction="none"``), in intensity units (``"norm"``) or
    squared intensity units (``"mse"``).
    """

    def __init__(self, form: Literal["norm", "mse"] = "norm", reduction: Reduction = "mean") -> None:
        super().__init__()
        if form not in ("norm", "mse"):
            raise ValueError(f'ReconstructionLoss form must be "norm" or "mse", got {form!r}.')
        self.form = form
        self.reduction = _check_reduction(reduction)

    def forward(self, reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if reconstruction.shape != x.shape:
            raise ValueError(
                f"Reconstruction {tuple(reconstruction.shape)} and input {tuple(x.shape)} differ in shape."
            )
        diff = reconstruction - x
        if self.form == "mse":
            per_item = diff.pow(2).flatten(1).mean(dim=1)
        else:
            per_modality = torch.linalg.vector_norm(diff.flatten(2), dim=2)  # (B, M)
            per_item = per_modality.sum(dim=1) / _voxels(x)
        return _reduce(per_item, self.reduction)
