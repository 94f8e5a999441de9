"""Lesion conspicuity: contrast-to-noise of the whole tumour against normal-appearing white matter.

A fused volume must not hide the lesion (issue 31 point 5): a voxel-wise convex combination of
sources in which the tumour is dark (T1) and bright (T2, FLAIR) can cancel the contrast that each
source shows. This module measures it:

* :func:`lesion_cnr` -- the contrast-to-noise ratio (CNR) of a lesion against a reference tissue::

      CNR = |mean(I[lesion]) - mean(I[reference])| / std(I[reference])

  means and the population standard deviation (``ddof=0``) over the voxels of each mask, in
  float64; unitless (intensity units cancel), so it does not depend on how a volume is scaled.
* :func:`normal_white_matter` -- normal-appearing white matter (NAWM) estimated from T1 when no
  tissue map is given: brain voxels farther than a margin from the lesion whose bias-flattened T1
  lies in the upper part of the brightest tissue mode (white matter is the brightest tissue on T1).
* :func:`conspicuity_ratio` -- the fused volume's CNR over the best source's: 1 when the fusion
  keeps all the lesion contrast that the most conspicuous source shows, near 0 when it hides it.

Arrays are 3-D ``(z, y, x)`` (source stacks ``(S, z, y, x)``), numpy arrays or torch tensors
(moved to the CPU). ``spacing`` follows ITK, ``(x, y, z)`` in millimetres, reversed here to
``(z, y, x)`` before it touches an array axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from nslfcore.metrics.utils import Array, _check_same_shape, _numpy

#: Default margin (mm) around the lesion left out of the normal-appearing white matter.
NAWM_MARGIN_MM: float = 5.0
#: Default T1 percentiles (of the brain outside the margin) bounding the white-matter mode.
NAWM_PERCENTILES: tuple[float, float] = (85.0, 99.0)
#: Default standard deviation (mm) of the Gaussian that estimates the bias field in :func:`normal_white_matter`.
NAWM_BIAS_SIGMA_MM: float = 20.0


def _mask(mask: Array) -> np.ndarray:
    """``mask`` as a numpy bool array (nonzero = inside)."""
    array = _numpy(mask)
    if array.dtype != np.bool_:
        array = array != 0
    return array


def lesion_cnr(image: Array, lesion_mask: Array, reference_mask: Array) -> float:
    """Contrast-to-noise ratio of a lesion against a reference tissue in one ``(z, y, x)`` volume; unitless.

    ``CNR = |mean(I[L]) - mean(I[R])| / std(I[R])``, ``L`` the lesion voxels, ``R`` the reference
    voxels (e.g. normal-appearing white matter), ``std`` the population standard deviation
    (``ddof=0``, divisor ``|R|``); float64. The masks may overlap (the caller keeps them apart).

    Args:
        image: ``(z, y, x)`` volume, any intensity unit (the ratio is scale-free).
        lesion_mask, reference_mask: ``(z, y, x)`` masks (bool, or nonzero = inside), same shape.

    Raises:
        ValueError: a mask is empty, or the reference is constant (``std = 0``: CNR undefined).

    Example::

        >>> lesion_cnr(flair, label > 0, nawm)  # whole tumour against NAWM on FLAIR
    """
    _check_same_shape(image, lesion_mask, "image", "lesion_mask")
    _check_same_shape(image, reference_mask, "image", "reference_mask")
    values = _numpy(image).astype(np.float64, copy=False)
    lesion, reference = _mask(lesion_mask), _mask(reference_mask)
    if not lesion.any():
        raise ValueError("lesion_mask is empty; the CNR needs at least one lesion voxel.")
    if not reference.any():
        raise ValueError("reference_mask is empty; the CNR needs at least one reference voxel.")
    inside = values[reference]
    noise = float(inside.std())
    if noise == 0.0:
        raise ValueError("the image is constant over reference_mask (std 0); the CNR is undefined.")
    return abs(float(values[lesion].mean()) - float(inside.mean())) / noise


def dilate_mm(mask: Array, margin_mm: float, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """``mask`` ``(z, y, x)`` grown by a ball of radius ``margin_mm`` (mm, ``spacing`` ``(x, y, z)`` mm):
    every voxel whose centre lies within ``margin_mm`` of a mask voxel's centre (Euclidean distance
    transform, computed in the mask's bounding box grown by the margin); ``margin_mm = 0`` returns
    the mask itself."""
    inside = _mask(mask)
    if margin_mm < 0:
        raise ValueError(f"margin_mm must be >= 0, got {margin_mm}.")
    if margin_mm == 0 or not inside.any():
        return inside.copy()
    spacing_zyx = tuple(float(s) for s in spacing)[::-1]
    where = np.nonzero(inside)
    box = tuple(
        slice(max(0, int(w.min()) - reach), min(n, int(w.max()) + reach + 1))
        for w, n, reach in zip(where, inside.shape, (int(margin_mm / s) + 1 for s in spacing_zyx), strict=True)
    )
    grown = np.zeros_like(inside)
    grown[box] = ndimage.distance_transform_edt(~inside[box], sampling=spacing_zyx) <= margin_mm
    return grown


def _flatten_bias(t1: np.ndarray, weights: np.ndarray, sigma_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """``t1`` ``(z, y, x)`` divided by its local mean over ``weights`` (float64): ``T1 / (G * (T1 W) / G * W)``,
    ``G`` a Gaussian of standard deviation ``sigma_mm`` (mm, ``spacing`` ``(x, y, z)`` mm).

    Computed on blocks of ``f = max(1, floor(sigma_mm / (4 spacing)))`` voxels per axis (5 for 20 mm at
    1 mm): block sums of ``T1 W`` and ``W``, the Gaussian in block units, their ratio linearly
    interpolated back to the voxels (``scipy.ndimage.zoom``, ``order=1``, ``grid_mode=True``); a
    field this smooth loses nothing at that scale. Where ``G * W`` vanishes (far from every weight)
    the local mean is the mean of ``T1`` over ``W``; where the local mean is not positive, 0.
    """
    spacing_zyx = [float(s) for s in tuple(spacing)[::-1]]
    factors = [max(1, int(sigma_mm / (4.0 * s))) for s in spacing_zyx]
    padded = [-(-n // f) * f for n, f in zip(t1.shape, factors, strict=True)]
    pad = [(0, p - n) for p, n in zip(padded, t1.shape, strict=True)]
    w = np.pad(weights.astype(np.float64), pad)
    tw = np.pad(t1, pad) * w
    blocks = [n // f for n, f in zip(padded, factors, strict=True)]
    shape = (blocks[0], factors[0], blocks[1], factors[1], blocks[2], factors[2])
    sigma_blocks = [sigma_mm / (s * f) for s, f in zip(spacing_zyx, factors, strict=True)]
    local_sum = ndimage.gaussian_filter(tw.reshape(shape).sum(axis=(1, 3, 5)), sigma_blocks)
    local_weight = ndimage.gaussian_filter(w.reshape(shape).sum(axis=(1, 3, 5)), sigma_blocks)
    positive = local_weight > 1e-6 * float(local_weight.max())
    fallback = float(tw.sum() / w.sum())
    local_mean = np.where(positive, local_sum / np.where(positive, local_weight, 1.0), fallback)
    local_mean = ndimage.zoom(local_mean, factors, order=1, mode="nearest", grid_mode=True)
    local_mean = local_mean[tuple(slice(0, n) for n in t1.shape)]
    return np.divide(t1, local_mean, out=np.zeros_like(t1), where=local_mean > 0)


def normal_white_matter(
    t1: Array,
    brain_mask: Array,
    lesion_mask: Array,
    margin_mm: float = NAWM_MARGIN_MM,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    percentiles: tuple[float, float] = NAWM_PERCENTILES,
    bias_sigma_mm: float | None = NAWM_BIAS_SIGMA_MM,
) -> np.ndarray:
    """Normal-appearing white matter ``(z, y, x)`` (bool) estimated from T1 when no tissue map is given.

    White matter is the brightest tissue on T1 (WM > GM > CSF; tumour and edema are darker). So:

    1. candidates ``C`` = brain voxels farther than ``margin_mm`` (5 mm) from every lesion voxel
       (``brain & ~dilate(lesion, margin_mm)``, :func:`dilate_mm`), which leaves out the edema
       fringe that the label misses;
    2. a smooth multiplicative bias field (coil shading, which moves grey matter into the white
       matter's range) is divided out: ``T = T1 / (G * (T1 C) / G * C)``, the local mean of T1
       over the candidates under a Gaussian ``G`` of standard deviation ``bias_sigma_mm``
       (20 mm; ``None``: ``T = T1``);
    3. ``lo, hi`` = the ``percentiles`` (85th, 99th) of ``T`` over ``C`` (numpy's linear
       interpolation);
    4. NAWM = ``C & (lo < T < hi)``: the upper part of the brightest tissue mode, without the top
       1 % (vessels, fat, hot voxels).

    The 85th percentile is high on purpose: white matter (fraction > 0.5) is only about 30 % of
    the brain outside the lesion on the realistic phantoms, and partial-volume and bias-shifted grey
    matter fill the percentiles below. There (5 cases), 83-97 % of the estimated voxels have a
    white-matter fraction > 0.5 (65th percentile without the bias step, 3 cases: 65-75 %).

    Args:
        t1: ``(z, y, x)`` T1 volume, raw or normalised (every step is invariant to scaling T1;
            without the bias step, to any increasing affine map).
        brain_mask: ``(z, y, x)`` brain voxels (e.g. :func:`nslfcore.data.transforms.brain_mask`).
        lesion_mask: ``(z, y, x)`` lesion voxels (the whole tumour, WT; may be empty).
        margin_mm: the margin (mm) around the lesion left out.
        spacing: voxel size ``(x, y, z)`` in mm (ITK order).
        percentiles: ``(low, high)`` in ``[0, 100]``, ``low < high``.
        bias_sigma_mm: the bias step's Gaussian standard deviation in mm, or ``None`` to skip it.

    Raises:
        ValueError: no brain voxel lies outside the margin, or the percentiles are not ordered.
    """
    _check_same_shape(t1, brain_mask, "t1", "brain_mask")
    _check_same_shape(t1, lesion_mask, "t1", "lesion_mask")
    low, high = (float(p) for p in percentiles)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {tuple(percentiles)}.")
    candidates = _mask(brain_mask) & ~dilate_mm(lesion_mask, margin_mm, spacing)
    if not candidates.any():
        raise ValueError("no brain voxel lies outside the lesion margin; normal white matter cannot be estimated.")
    values = _numpy(t1).astype(np.float64)
    if bias_sigma_mm is not None:
        values = _flatten_bias(values, candidates, bias_sigma_mm, spacing)
    lo, hi = np.percentile(values[candidates], [low, high])
    return candidates & (values > lo) & (values < hi)


def conspicuity_ratio(fused: Array, sources: Array | Sequence[Array], wt_mask: Array, nawm_mask: Array) -> dict[str, Any]:
    """Lesion conspicuity of a fused volume against its sources: its CNR over the best source's.

    Args:
        fused: ``(z, y, x)`` fused volume.
        sources: ``(S, z, y, x)`` stack (``(t1, t1ce, t2, flair)`` for nslfcore's stacks) or a
            sequence of ``S`` ``(z, y, x)`` volumes, on the fused volume's grid.
        wt_mask: ``(z, y, x)`` whole tumour (internal labels > 0).
        nawm_mask: ``(z, y, x)`` normal-appearing white matter (e.g. :func:`normal_white_matter`).

    Returns:
        ``{"cnr_fused", "cnr_sources", "best_source", "cnr_best", "ratio"}``: :func:`lesion_cnr` of
        the fused volume, of each source (list, source order; NaN for a source constant over the
        NAWM, e.g. a missing sequence filled with zeros: it shows no lesion), the index of the
        source with the largest CNR, that CNR, and ``ratio = cnr_fused / cnr_best`` (1 when both
        are 0, ``inf`` when only the best is 0).

    Raises:
        ValueError: as :func:`lesion_cnr` for the fused volume (empty masks, constant over the
            NAWM), or no source has a defined CNR.

    Example::

        >>> c = conspicuity_ratio(fused, image, label > 0, nawm)  # image (4, z, y, x)
        >>> c["ratio"] >= 0.8  # the fusion keeps 80 % of the best source's lesion contrast
    """
    items = list(sources)
    cnr_fused = lesion_cnr(fused, wt_mask, nawm_mask)
    cnr_sources = [_source_cnr(source, wt_mask, nawm_mask) for source in items]
    defined = [i for i, v in enumerate(cnr_sources) if not math.isnan(v)]
    if not defined:
        raise ValueError("no source has a defined lesion CNR (none given, or all constant over the NAWM).")
    best = max(defined, key=lambda i: cnr_sources[i])
    cnr_best = cnr_sources[best]
    if cnr_best == 0.0:
        ratio = 1.0 if cnr_fused == 0.0 else math.inf
    else:
        ratio = cnr_fused / cnr_best
    return {"cnr_fused": cnr_fused, "cnr_sources": cnr_sources, "best_source": best, "cnr_best": cnr_best, "ratio": ratio}


def _source_cnr(source: Array, wt_mask: Array, nawm_mask: Array) -> float:
    """:func:`lesion_cnr` of one source; NaN where it is constant over the NAWM (called once the fused
    volume's CNR showed both masks non-empty, so that is the only error left after the shape check)."""
    _check_same_shape(source, nawm_mask, "source", "nawm_mask")
    try:
        return lesion_cnr(source, wt_mask, nawm_mask)
    except ValueError:
        return math.nan
