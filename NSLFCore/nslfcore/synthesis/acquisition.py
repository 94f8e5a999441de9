"""What the scanner and the preprocessing do to an image (torch): every step random per sequence.

In this order, on ``(4, z, y, x)`` relative intensities of :func:`nslfcore.synthesis.intensities.render`:

1. **Partial volume and slice thickness**: a Gaussian blur of 0.3-1.0 voxel at label borders
   (:data:`~nslfcore.synthesis.intensities.PARTIAL_VOLUME_SIGMA`), merged with the acquisition's own
   blur into one pass; with probability 0.6, the sequence was acquired with 2-6 mm slices along a
   random axis (axial, coronal or sagittal) -- a Gaussian slice profile along that axis, sampling
   every ``t`` mm, and linear interpolation back to 1 mm (as BraTS resampled such exams);
   otherwise a 3-D acquisition with a slight anisotropic blur (0-0.6 voxel).
2. **Bias field**: a smooth multiplicative field ``exp(s * field)``, ``s`` in 0-0.2.
3. **Motion ghosting** (probability 0.15): a copy shifted by half the field of view along a
   phase-encoding axis, 3-12 % of the intensity.
4. **Rician noise**: ``sqrt((x + n1)^2 + n2^2)``, sigma 0.5-4 % of the sequence's brain mean.
5. **Interpolation overshoot** (probability 0.5): ``x + k (x - blur(x))``, ``k`` in 0.2-0.8, which
   gives the small negative values real resampled exams have at dark borders.
6. **Scanner units**: multiplication by 80-4000 and, with probability 0.7, rounding to integers.
7. **Skull stripping**: 0 outside the brain mask (probability 0.85) or a faint, not exactly zero
   background (noise at 0.2-2 % of the brain mean).

Tensors are ``(4, z, y, x)`` float32 in :data:`nslfcore.MODALITIES` order; ``brain`` is ``(z, y, x)`` bool.
"""

from __future__ import annotations

import torch

from nslfcore.synthesis.intensities import PARTIAL_VOLUME_SIGMA, _uniform, gaussian_blur, smooth_field


def _chance(generator: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=generator)) < p


def thick_slices(channel: torch.Tensor, axis: int, thickness: int, offset: int) -> torch.Tensor:
    """Sample ``(z, y, x)`` every ``thickness`` voxels along ``axis`` from ``offset``, then interpolate back linearly.

    Edges replicate the nearest kept slice.
    """
    size = channel.shape[axis]
    index = torch.arange(offset % thickness, size, thickness, device=channel.device)
    kept = channel.index_select(axis, index)
    moved = kept.movedim(axis, 0)  # (n, a, b)
    positions = torch.arange(size, device=channel.device, dtype=channel.dtype)
    coord = ((positions - index[0]) / thickness).clamp(0, len(index) - 1)
    low = coord.floor().long()
    high = (low + 1).clamp_max(len(index) - 1)
    weight = (coord - low).view(-1, *([1] * (moved.dim() - 1)))
    out = moved[low] * (1 - weight) + moved[high] * weight
    return out.movedim(0, axis)


def acquire(images: torch.Tensor, brain: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scanner-like images ``(4, z, y, x)`` from relative intensities; see the module docstring."""
    device = images.device
    channels = images.shape[0]
    shape = tuple(images.shape[1:])
    out = []
    inside = brain.to(device)
    for c in range(channels):
        x = images[c]
        partial = float(_uniform(generator, *PARTIAL_VOLUME_SIGMA))
        if _chance(generator, 0.6):
            axis = int(torch.randint(0, 3, (), generator=generator))
            thickness = int(torch.randint(2, 7, (), generator=generator))
            sigma = torch.full((1, 3), partial)
            sigma[0, axis] = (partial**2 + (thickness / 2.355) ** 2) ** 0.5
            x = gaussian_blur(x[None], sigma)[0]
            x = thick_slices(x, axis, thickness, int(torch.randint(0, thickness, (), generator=generator)))
        else:
            extra = _uniform(generator, 0.0, 0.6, (1, 3))
            x = gaussian_blur(x[None], (extra**2 + partial**2).sqrt())[0]
        bias = torch.exp(float(_uniform(generator, 0.0, 0.2)) * smooth_field(generator, shape, 3, 1, device)[0])
        x = x * bias
        mean = x[inside].mean() if bool(inside.any()) else x.mean()
        if _chance(generator, 0.15):
            axis = 1 + int(torch.randint(0, 2, (), generator=generator))
            x = x + float(_uniform(generator, 0.03, 0.12)) * torch.roll(x, shape[axis] // 2, dims=axis)
        noise = float(_uniform(generator, 0.005, 0.04)) * mean
        n1 = torch.randn(shape, generator=generator).to(device)
        n2 = torch.randn(shape, generator=generator).to(device)
        x = torch.sqrt((x + noise * n1) ** 2 + (noise * n2) ** 2)
        if _chance(generator, 0.5):
            x = x + float(_uniform(generator, 0.2, 0.8)) * (x - gaussian_blur(x[None], torch.full((1, 3), 1.2))[0])
        x = x * float(_uniform(generator, 80.0, 4000.0))
        if _chance(generator, 0.7):
            x = torch.round(x)
        scale = float(x[inside].mean()) if bool(inside.any()) else 1.0
        if _chance(generator, 0.85):
            x = torch.where(inside, x, torch.zeros((), device=device))
        else:
            floor = float(_uniform(generator, 0.002, 0.02)) * scale
            background = (floor * torch.randn(shape, generator=generator).to(device)).abs()
            x = torch.where(inside, x, background)
        out.append(x)
    return torch.stack(out).float()

