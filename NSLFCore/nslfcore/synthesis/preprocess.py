"""What inference does to a real exam, in torch on the synthesis device: brain mask, brain box, normalisation.

The torch twins of :func:`nslfcore.data.transforms.brain_mask`, :func:`~nslfcore.data.transforms.brain_bbox`
(margin 0) and :func:`~nslfcore.data.transforms.normalize` with ``"robust"`` (the default), so that
on-the-fly training crops (:class:`~nslfcore.synthesis.dataset.SynthesisCropDataset`) are made the
way :func:`~nslfcore.data.transforms.preprocess_case` makes them from files, without leaving the
GPU. :func:`normalize_robust` follows ``normalize`` step by step (the same subsample, percentiles,
outlier bounds rounded to float32, float64 mean, float32 arithmetic); it agrees within 1e-5
(tested on synthesised volumes).

Tensors are ``(C, z, y, x)`` (channel first) and ``(z, y, x)``, on any device.
"""

from __future__ import annotations

import numpy as np
import torch

from nslfcore.data.transforms import OUTLIER_MARGIN, OUTLIER_PERCENTILES


def brain_mask(image: torch.Tensor) -> torch.Tensor:
    """Boolean brain mask ``(z, y, x)`` of a ``(C, z, y, x)`` stack: any modality > 0."""
    return (image > 0).any(dim=0)


def brain_box(mask: torch.Tensor) -> tuple[slice, slice, slice]:
    """The bounding box ``(z, y, x)`` of ``mask`` (the whole volume when it is empty), as ``brain_bbox(mask, 0)``."""
    if not bool(mask.any()):
        return (slice(None),) * 3
    box = []
    for axis in range(3):
        hits = torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def _outliers(channel: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor | None:
    """Brain voxels beyond the percentile range by more than the margin, or ``None`` (as ``transforms._outliers``)."""
    if values.numel() < 100:
        return None
    sample = values[:: max(1, values.numel() // 262_144)]
    quantiles = torch.tensor([p / 100 for p in OUTLIER_PERCENTILES], dtype=torch.float64, device=sample.device)
    low, high = (float(v) for v in torch.quantile(sample.double(), quantiles))
    margin = OUTLIER_MARGIN * (high - low)
    above, below = float(np.float32(high + margin)), float(np.float32(low - margin))
    if float(values.max()) <= above and float(values.min()) >= below:
        return None
    return mask & ((channel > above) | (channel < below))


def normalize_robust(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``normalize(image, mask, "robust")`` in torch: per modality, ``x - mean(brain)``, min-max to [0, 1].

    Isolated extreme brain voxels (see :func:`nslfcore.data.transforms.normalize`) take no part in
    the mean, minimum and maximum and are clipped afterwards; a constant modality becomes zeros.
    ``image`` ``(C, z, y, x)``, ``mask`` ``(z, y, x)`` bool on the same device; returns float32 ``(C, z, y, x)``.
    """
    image = image.float()
    out = torch.empty_like(image)
    any_brain = bool(mask.any())
    for c in range(image.shape[0]):
        channel = image[c]
        values = channel[mask] if any_brain else channel.reshape(-1)
        outliers = _outliers(channel, mask, values) if any_brain else None
        if outliers is not None:
            values = channel[mask & ~outliers]
        mean = float(values.double().mean()) if values.numel() else 0.0
        shifted = channel - float(np.float32(mean))
        kept = shifted if outliers is None else shifted[~outliers]
        low, high = float(kept.min()), float(kept.max())
        if high > low:
            out[c] = (shifted - low) / (high - low)
        else:
            out[c] = 0.0
        if outliers is not None:
            out[c].clamp_(0.0, 1.0)
    return out


def preprocess(images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(4, z, y, x)`` in scanner units and their target ``(z, y, x)`` -> the normalised brain box and its target.

    As :func:`~nslfcore.data.transforms.preprocess_case` with its defaults: brain = any sequence > 0,
    cropped to the brain's bounding box, normalised with :func:`normalize_robust`.
    """
    mask = brain_mask(images)
    box = brain_box(mask)
    return normalize_robust(images[(slice(None), *box)], mask[box]), target[box]
