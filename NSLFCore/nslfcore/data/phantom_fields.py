"""Random smooth fields, blurring and resampling for the phantom generator (numpy + torch only).

All arrays are ``(z, y, x)``; distances and widths are in voxels unless a name says mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _as_5d(array: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return t.reshape((1, -1, *t.shape[-3:]))


def resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resize of ``(C, z, y, x)`` or ``(z, y, x)`` to spatial ``shape`` (corner-aligned)."""
    out = F.interpolate(_as_5d(array), size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)
    return out.reshape((*array.shape[:-3], *shape)).numpy()


def gaussian_blur(array: np.ndarray, sigma: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of ``(C, z, y, x)`` or ``(z, y, x)``; ``sigma`` in voxels per axis (z, y, x); edges replicate."""
    sigmas = [float(s) for s in sigma] if isinstance(sigma, (Sequence, np.ndarray)) else [float(sigma)] * 3
    out = np.asarray(array, dtype=np.float32)
    for axis, s in enumerate(sigmas):
        if s <= 0:
            continue
        ax = out.ndim - 3 + axis
        radius = max(1, int(np.ceil(3 * s)))
        weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
        weights = (weights / weights.sum()).astype(np.float32)
        pad = [(0, 0)] * out.ndim
        pad[ax] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[ax]
        acc = np.zeros(out.shape, np.float32)
        for offset, w in enumerate(weights):
            index = [slice(None)] * out.ndim
            index[ax] = slice(offset, offset + n)
            acc += w * padded[tuple(index)]
        out = acc
    return out


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """A smooth random field of ``shape`` (z, y, x), zero mean, unit standard deviation.

    ``cells``: number of independent lobes along each axis (about ``shape / feature size``).
    """
    cells3 = [float(c) for c in cells] if isinstance(cells, (Sequence, np.ndarray)) else [float(cells)] * 3
    coarse = rng.standard_normal([max(2, int(round(c)) + 2) for c in cells3]).astype(np.float32)
    mid_shape = [min(4 * c, max(int(n) // 2, c)) for c, n in zip(coarse.shape, shape)]
    mid = gaussian_blur(resize(coarse, mid_shape), [0.5 * m / c for m, c in zip(mid_shape, coarse.shape)])
    field = resize(mid, shape)
    std = float(field.std())
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def sample(volumes: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Linearly interpolate ``volumes`` ``(C, z, y, x)`` at voxel coordinates ``coords`` ``(3, z', y', x')`` = (k, j, i).

    Outside the volume the value is 0. Returns ``(C, z', y', x')`` float32.
    """
    vol = _as_5d(volumes)
    sizes = vol.shape[2:]  # D, H, W
    c = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32))
    grid = torch.stack(
        [2 * c[2] / max(sizes[2] - 1, 1) - 1, 2 * c[1] / max(sizes[1] - 1, 1) - 1, 2 * c[0] / max(sizes[0] - 1, 1) - 1],
        dim=-1,
    )[None]
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].numpy()


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))).astype(np.float32)
