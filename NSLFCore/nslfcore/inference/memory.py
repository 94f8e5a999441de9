"""Memory of one whole-volume pass: the estimate, what the device has, and running out of it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nslfcore.data.validation import available_ram_bytes
from nslfcore.models import Network


def estimate_memory_bytes(model: Network, spatial_shape: Sequence[int], sequential: bool = False) -> int:
    """Rough peak activation memory of one whole-volume pass (float32), in bytes.

    ``spatial_shape`` is ``(z, y, x)``; sizes are padded to multiples of 16 as NSLF does. The
    network states its own need per voxel (:meth:`~nslfcore.models.interface.Network.inference_bytes_per_voxel`;
    NSLF: 1024 B/voxel for ``compact``, 3904 for ``paper``, about half with ``sequential``, one
    modality at a time). Under bf16 autocast (CUDA) the real need is lower still.
    """
    padded = [math.ceil(s / 16) * 16 for s in spatial_shape]
    return int(np.prod(padded)) * model.inference_bytes_per_voxel(sequential)


def available_bytes(device: torch.device) -> int:
    """Memory whole-volume inference may use: 70 % of free CUDA memory, or half the available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    return available_ram_bytes() // 2


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is PyTorch running out of GPU or CPU memory."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
