"""Segmentation metrics of NSLF: overlap (Dice, Jaccard, ...) and HD95 per BraTS region.

:func:`segmentation_metrics` turns internal label maps (0 background, 1 NCR, 2 ED, 3 ET;
:mod:`nslfcore.data.labels`) into the regions ET = {3}, TC = {1, 3}, WT = {1, 2, 3} and scores them
with :func:`overlap_metrics` (Dice, Jaccard, sensitivity, specificity, accuracy; over the whole
volume and, given a brain mask, over the brain) and :func:`hd95`, with the BraTS conventions for
empty regions.

HD95 has two definitions in the literature, both offered (:data:`HD95_DEFINITIONS`): ``"max"``,
the larger of the two one-way 95th percentiles (MONAI's ``compute_hausdorff_distance``; the
project's default, key ``"hd95"``), and ``"pooled"``, one 95th percentile of both directions'
surface distances pooled (medpy's ``medpy.metric.binary.hd95``, which the NSLF authors' scripts
use; key ``"hd95_pooled"``). Pooled is at most max up to the interpolation between neighbouring
distances; every table names the one it used.

Volumes are 3-D ``(z, y, x)``, numpy arrays or torch tensors; the overlap counts run on the CPU.
Geometry follows ITK: ``spacing`` is ``(x, y, z)`` in millimetres, reversed here to ``(z, y, x)``
before it touches an array axis; only HD95 uses it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage

from nslfcore.data.labels import REGIONS, region_mask
from nslfcore.metrics.utils import Array, _check_same_shape, _numpy

#: HD95 (mm) when exactly one of prediction and reference is empty: the BraTS challenge value, just
#: above the 373.1 mm diagonal of the 240 x 240 x 155 (1 mm) BraTS grid.
HD95_EMPTY: float = 374.0

#: Which HD95: ``"max"`` (MONAI) or ``"pooled"`` (medpy, the NSLF authors' scripts); see :func:`hd95`.
HD95Definition = Literal["max", "pooled"]
#: Each definition, as a table names it.
HD95_DEFINITIONS: dict[str, str] = {
    "max": "the larger of the two one-way 95th percentiles of surface distances (MONAI)",
    "pooled": "the 95th percentile of both directions' surface distances pooled (medpy, the authors' scripts)",
}


def _spacing_zyx(spacing: Sequence[float]) -> tuple[float, float, float]:
    """ITK ``(x, y, z)`` spacing in mm -> the ``(z, y, x)`` order of the array axes."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(s > 0 and math.isfinite(s) for s in values):
        raise ValueError(f"spacing must be three positive (x, y, z) values in mm, got {tuple(spacing)}.")
    return values[2], values[1], values[0]


def _bool(mask: Array) -> np.ndarray:
    return _numpy(mask).astype(bool, copy=False)


def overlap_metrics(pred: Array, ref: Array, roi: Array | None = None) -> dict[str, float]:
    """Voxel-overlap metrics of a binary prediction against a binary reference, ``(z, y, x)``.

    Counts over the voxels of ``roi`` (a brain mask; every voxel when ``None``): ``TP`` (pred and
    ref), ``FP`` (pred, not ref), ``FN`` (ref, not pred), ``TN`` (neither), ``N`` their sum::

        dice        = 2 TP / (2 TP + FP + FN)
        jaccard     = TP / (TP + FP + FN)
        sensitivity = TP / (TP + FN)
        specificity = TN / (TN + FP)
        accuracy    = (TP + TN) / N

    all unitless in ``[0, 1]``. Empty denominators (BraTS conventions): both masks empty -> Dice 1,
    Jaccard 1; reference empty -> sensitivity 1 if the prediction is empty too, else 0 (the BraTS
    "NaN -> 1 when both are empty", and a false detection scores 0 as in Dice); reference covering
    every voxel -> specificity 1 if the prediction does too, else 0 (the same rule for the
    background). An empty ``roi`` raises ``ValueError``.

    Returns ``{"dice", "jaccard", "sensitivity", "specificity", "accuracy"}``.
    """
    _check_same_shape(pred, ref, "prediction", "reference")
    p, r = _bool(pred), _bool(ref)
    if roi is not None:
        _check_same_shape(pred, roi, "prediction", "brain mask")
        inside = _bool(roi)
        p, r = p[inside], r[inside]
    n = p.size
    if n == 0:
        raise ValueError("The brain mask is empty; pass a mask with at least one voxel, or none.")
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(r)) - tp
    tn = n - tp - fp - fn
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "jaccard": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "sensitivity": tp / (tp + fn) if tp + fn else float(fp == 0),
        "specificity": tn / (tn + fp) if tn + fp else float(fn == 0),
        "accuracy": (tp + tn) / n,
    }


def hd95_key(definition: HD95Definition = "max") -> str:
    """The metric name of an HD95 definition in results and tables: ``"hd95"`` (max) or ``"hd95_pooled"``."""
    if definition not in HD95_DEFINITIONS:
        raise ValueError(f"The HD95 definition must be 'max' or 'pooled', got {definition!r}.")
    return "hd95" if definition == "max" else "hd95_pooled"


def _surface_distances(source: np.ndarray, target: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """Distances in mm from each surface voxel of ``source`` to the nearest surface voxel of ``target``.

    Surface: the mask minus its binary erosion by the 6-neighbour (connectivity 1) structure, voxels
    beyond the array counting as outside. Both masks are cropped first to their common bounding box
    plus one voxel: the same surfaces and distances, a smaller distance transform.
    """
    both = np.argwhere(source | target)
    lo = np.maximum(both.min(axis=0) - 1, 0)
    hi = np.minimum(both.max(axis=0) + 2, source.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    structure = ndimage.generate_binary_structure(3, 1)
    src, tgt = source[box], target[box]
    src_surface = src & ~ndimage.binary_erosion(src, structure)
    tgt_surface = tgt & ~ndimage.binary_erosion(tgt, structure)
    return ndimage.distance_transform_edt(~tgt_surface, sampling=spacing_zyx)[src_surface]


def hd95(pred: Array, ref: Array, spacing: Sequence[float] = (1.0, 1.0, 1.0), definition: HD95Definition = "max") -> float:
    """95th-percentile symmetric Hausdorff distance (HD95) in mm of two binary ``(z, y, x)`` masks.

    Both definitions start from the surface voxels of each mask (the mask minus its binary erosion
    with the 6-neighbour structure) and the Euclidean distances in mm from every surface voxel of
    one mask to the nearest surface voxel of the other (distance transform with the voxel spacing),
    ``d(pred -> ref)`` and ``d(ref -> pred)``; ``P95`` is the linearly interpolated 95th percentile.

    * ``"max"`` (default): ``max(P95(d(pred -> ref)), P95(d(ref -> pred)))``, MONAI's
      ``compute_hausdorff_distance(percentile=95, spacing=...)`` (computed by MONAI).
    * ``"pooled"``: one ``P95`` of ``d(pred -> ref)`` and ``d(ref -> pred)`` joined, medpy's
      ``medpy.metric.binary.hd95`` (the NSLF authors' scripts), computed here with SciPy. Not above
      ``"max"`` but for the linear interpolation between neighbouring distances (the nearest-rank
      percentile of the joined list lies between the two one-way ones); usually lower.

    Args:
        pred, ref: ``(z, y, x)`` masks (non-zero = inside).
        spacing: ITK ``(x, y, z)`` voxel size in mm; used as ``(z, y, x)``.
        definition: ``"max"`` or ``"pooled"`` (:data:`HD95_DEFINITIONS`).

    BraTS conventions, the same for both: both masks empty -> 0; exactly one empty ->
    :data:`HD95_EMPTY` (374 mm).

    Example::

        >>> a = np.zeros((1, 1, 8), bool); b = a.copy(); a[0, 0, 1] = b[0, 0, 4] = True
        >>> hd95(a, b), hd95(a, b, definition="pooled")
        (3.0, 3.0)
    """
    _check_same_shape(pred, ref, "prediction", "reference")
    hd95_key(definition)  # checks the definition
    spacing_zyx = _spacing_zyx(spacing)
    p, r = _bool(pred), _bool(ref)
    has_p, has_r = bool(p.any()), bool(r.any())
    if not (has_p or has_r):
        return 0.0
    if not (has_p and has_r):
        return HD95_EMPTY
    if definition == "pooled":
        pooled = np.concatenate([_surface_distances(p, r, spacing_zyx), _surface_distances(r, p, spacing_zyx)])
        return float(np.percentile(pooled, 95))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        distance = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(r)[None, None],
            include_background=True,
            percentile=95,
            spacing=list(spacing_zyx),
        )
    return float(distance.reshape(-1)[0])


def segmentation_metrics(
    pred_labels: Array,
    ref_labels: Array,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    brain_mask: Array | None = None,
    hd95_definition: HD95Definition = "max",
) -> dict[str, dict[str, float]]:
    """Per-region segmentation metrics of internal label maps (BraTS regions ET, TC, WT).

    Args:
        pred_labels, ref_labels: ``(z, y, x)`` internal labels in {0, 1, 2, 3} (0 background,
            1 NCR, 2 ED, 3 ET; map BraTS 2021 files first with
            :func:`nslfcore.data.labels.to_internal`).
        spacing: ITK ``(x, y, z)`` voxel size in mm, for HD95.
        brain_mask: optional ``(z, y, x)`` brain mask (non-zero = brain), e.g.
            :func:`nslfcore.data.transforms.brain_mask` of the case.
        hd95_definition: ``"max"`` (MONAI, key ``"hd95"``) or ``"pooled"`` (medpy, the authors'
            scripts, key ``"hd95_pooled"``); see :func:`hd95`.

    Returns:
        ``{"ET": {...}, "TC": {...}, "WT": {...}}`` (regions of
        :data:`nslfcore.data.labels.REGIONS`), each with ``"dice"``, ``"jaccard"``,
        ``"sensitivity"``, ``"specificity"``, ``"accuracy"`` over the whole volume
        (:func:`overlap_metrics`) and ``"hd95"`` or ``"hd95_pooled"`` in mm (:func:`hd95`); with a brain mask also
        ``"dice_brain"``, ``"sensitivity_brain"``, ``"specificity_brain"``, ``"accuracy_brain"``
        counted over brain voxels only (specificity and accuracy are much lower there than over a
        volume that is mostly air).

    Example::

        >>> segmentation_metrics(pred, ref, spacing=(1.0, 1.0, 1.0))["WT"]["dice"]
    """
    _check_same_shape(pred_labels, ref_labels, "prediction labels", "reference labels")
    key = hd95_key(hd95_definition)
    pred, ref = _numpy(pred_labels), _numpy(ref_labels)
    for name, labels in (("prediction", pred), ("reference", ref)):
        if labels.size and not np.isin(labels, (0, 1, 2, 3)).all():
            raise ValueError(
                f"The {name} labels hold values outside the internal classes 0-3 "
                f"({sorted(np.unique(labels).tolist())[:8]}); map BraTS files with nslfcore.data.labels.to_internal."
            )
    if brain_mask is not None:
        _check_same_shape(pred_labels, brain_mask, "prediction labels", "brain mask")
    results: dict[str, dict[str, float]] = {}
    for region in REGIONS:
        p, r = region_mask(pred, region), region_mask(ref, region)
        metrics = overlap_metrics(p, r)
        metrics[key] = hd95(p, r, spacing, hd95_definition)
        if brain_mask is not None:
            inside = overlap_metrics(p, r, roi=brain_mask)
            for name in ("dice", "sensitivity", "specificity", "accuracy"):
                metrics[f"{name}_brain"] = inside[name]
        results[region] = metrics
    return results
