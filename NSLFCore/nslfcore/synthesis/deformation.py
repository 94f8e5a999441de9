"""Random spatial warps of a label map (torch): affine and smooth elastic, nearest-neighbour.

A label map already carries one random affine and elastic placement of the template
(:mod:`nslfcore.synthesis.label_map`); :func:`random_warp` adds another per synthesised image, so
that one label map gives many anatomies: rotation up to ``rotation_deg`` about each axis, scaling
by ``1 +- scale`` per axis, shear up to ``shear``, and a smooth displacement field of about
``elastic_mm`` RMS with a wavelength of a few centimetres.

Tensors are ``(z, y, x)``; 1 mm voxels assumed for the displacement in mm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nslfcore.synthesis.intensities import _uniform, smooth_field


def random_affine(generator: torch.Generator, rotation_deg: float, scale: float, shear: float) -> torch.Tensor:
    """A random 3x3 matrix (rotation, scaling, shear) acting on normalised ``(x, y, z)`` grid coordinates."""
    angles = _uniform(generator, -rotation_deg, rotation_deg, (3,)) * math.pi / 180
    cx, cy, cz = torch.cos(angles)
    sx, sy, sz = torch.sin(angles)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    shears = torch.eye(3) + torch.triu(_uniform(generator, -shear, shear, (3, 3)), diagonal=1)
    return rz @ ry @ rx @ shears @ torch.diag(1 + _uniform(generator, -scale, scale, (3,)))


def random_warp(labels: torch.Tensor, generator: torch.Generator, rotation_deg: float = 10.0, scale: float = 0.1,
                shear: float = 0.05, elastic_mm: float = 3.0) -> torch.Tensor:  # fmt: skip
    """``labels`` ``(z, y, x)`` (integer) through a random affine and elastic warp about the centre (nearest, 0 outside)."""
    shape = tuple(labels.shape)
    device = labels.device
    theta = torch.zeros(1, 3, 4)
    theta[0, :, :3] = random_affine(generator, rotation_deg, scale, shear)
    grid = F.affine_grid(theta.to(device), [1, 1, *shape], align_corners=True)  # (1, z, y, x, 3) as (x, y, z)
    if elastic_mm > 0:
        cells = max(2, int(max(shape) / 40))
        field = smooth_field(generator, shape, cells, 3, device) * float(_uniform(generator, 0.0, elastic_mm))
        scale_to_grid = torch.tensor([2.0 / max(n - 1, 1) for n in shape[::-1]], device=device)  # mm -> (x, y, z) grid units
        grid = grid + field.permute(1, 2, 3, 0)[None] * scale_to_grid
    warped = F.grid_sample(labels[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return warped[0, 0].to(labels.dtype)
