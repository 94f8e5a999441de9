"""What the metrics of :mod:`nslfcore.metrics` share: the :data:`Array` type and its checks.

Every volume is 3-D ``(z, y, x)`` (the order of a SimpleITK array and of nslfcore tensors without
their batch/channel axes), as a numpy array or a torch tensor (any device).
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def _check_3d(array: Array, name: str) -> None:
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3-D (z, y, x) volume, got shape {tuple(array.shape)}.")


def _check_same_shape(a: Array, b: Array, name_a: str, name_b: str) -> None:
    _check_3d(a, name_a)
    _check_3d(b, name_b)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape.")


def _numpy(array: Array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
