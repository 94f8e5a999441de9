"""Memory of one whole-volume pass: the estimate, what the device has, and running out of it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nslfcore.data.validation import available_ram_bytes
from nslfcore.models import NSLF


def estimate_memory_bytes(model: torch.nn.Module, spatial_shape: Sequence[int], sequential: bool = False) -> int:
    """Rough peak activation memory of one whole-volume pass (float32), in bytes.

    ``spatial_shape`` is ``(z, y, x)``; sizes are padded to multiples of 16 as the model does.
    Batched NSLF, per voxel: about six full-resolution tensors of ``4 modalities x w0`` channels
    are alive at the CU-Net's last decoder level (skip, up-sampled, concatenation, two
    convolutions, the output), plus the four local features the FCD and FSD read, the FSD's first
    width and ~16 channels of inputs and outputs: ``4 bytes x (28 w0 + fsd0 + 16)``, i.e. 1024
    B/voxel for ``compact`` and 3904 for ``paper`` (measured peak RSS on the CPU, torch 2.13: about
    900 and 2930). ``sequential`` (one modality at a time, :meth:`NSLF.fuse_and_segment_sequential`):
    the four stored local features, one modality's decoder and the FSD's two first-width tensors,
    ``4 bytes x (10 w0 + 2 fsd0 + 16)``: 512 B/voxel for ``compact``, 1856 for ``paper``. Under bf16
    autocast (CUDA) the real need is lower still. Other networks (the U-Net baseline) state their
    own ``inference_bytes_per_voxel``.
    """
    padded = [math.ceil(s / 16) * 16 for s in spatial_shape]
    voxels = int(np.prod(padded))
    if isinstance(model, NSLF):
        w0, fsd0 = model.config.local_width, model.config.fsd_widths[0]
        per_voxel = 4 * (10 * w0 + 2 * fsd0 + 16) if sequential else 4 * (6 * 4 * w0 + 4 * w0 + fsd0 + 16)
    else:
        per_voxel = int(getattr(model, "inference_bytes_per_voxel", 4096))
    return voxels * per_voxel


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
