"""Segmentation metrics of NSLF: overlap (Dice, Jaccard, ...) and HD95 per BraTS region.

:func:`segmentation_metrics` turns internal label maps (0 background, 1 NCR, 2 ED, 3 ET;
:mod:`nslfcore.data.labels`) into the regions ET = {3}, TC = {1, 3}, WT = {1, 2, 3} and scores them
with :func:`overlap_metrics` (Dice, Jaccard, sensitivity, specificity, accuracy; over the whole
volume and, given a brain mask, over the brain) and :func:`hd95`, with the BraTS conventions for
empty regions.

Volumes are 3-D ``(z, y, x)``, numpy arrays or torch tensors; the overlap counts run on the CPU.
Geometry follows ITK: ``spacing`` is ``(x, y, z)`` in millimetres, reversed here to ``(z, y, x)``
before it touches an array axis; only HD95 uses it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from nslfcore.data.labels import REGIONS, region_mask
from nslfcore.metrics.utils import Array, _check_same_shape, _numpy

#: HD95 (mm) when exactly one of prediction and reference is empty: the BraTS challenge value, just
#: above the 373.1 mm diagonal of the 240 x 240 x 155 (1 mm) BraTS grid.
HD95_EMPTY: float = 374.0


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


def hd95(pred: Array, ref: Array, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th-percentile symmetric Hausdorff distance (HD95) in mm of two binary ``(z, y, x)`` masks.

    MONAI's ``compute_hausdorff_distance(percentile=95, spacing=...)``: the surface voxels of each
    mask (the mask minus its binary erosion), the Euclidean distances in mm from every surface
    voxel of one mask to the nearest surface voxel of the other (distance transform with the voxel
    spacing), and ``HD95 = max(P95(d(pred -> ref)), P95(d(ref -> pred)))`` with ``P95`` the
    linearly interpolated 95th percentile (``torch.quantile``).

    Args:
        pred, ref: ``(z, y, x)`` masks (non-zero = inside).
        spacing: ITK ``(x, y, z)`` voxel size in mm; passed to MONAI as ``(z, y, x)``.

    BraTS conventions: both masks empty -> 0; exactly one empty -> :data:`HD95_EMPTY` (374 mm).
    """
    _check_same_shape(pred, ref, "prediction", "reference")
    spacing_zyx = _spacing_zyx(spacing)
    p, r = _bool(pred), _bool(ref)
    has_p, has_r = bool(p.any()), bool(r.any())
    if not (has_p or has_r):
        return 0.0
    if not (has_p and has_r):
        return HD95_EMPTY
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
) -> dict[str, dict[str, float]]:
    """Per-region segmentation metrics of internal label maps (BraTS regions ET, TC, WT).

    Args:
        pred_labels, ref_labels: ``(z, y, x)`` internal labels in {0, 1, 2, 3} (0 background,
            1 NCR, 2 ED, 3 ET; map BraTS 2021 files first with
            :func:`nslfcore.data.labels.to_internal`).
        spacing: ITK ``(x, y, z)`` voxel size in mm, for HD95.
        brain_mask: optional ``(z, y, x)`` brain mask (non-zero = brain), e.g.
            :func:`nslfcore.data.transforms.brain_mask` of the case.

    Returns:
        ``{"ET": {...}, "TC": {...}, "WT": {...}}`` (regions of
        :data:`nslfcore.data.labels.REGIONS`), each with ``"dice"``, ``"jaccard"``,
        ``"sensitivity"``, ``"specificity"``, ``"accuracy"`` over the whole volume
        (:func:`overlap_metrics`) and ``"hd95"`` in mm (:func:`hd95`); with a brain mask also
        ``"dice_brain"``, ``"sensitivity_brain"``, ``"specificity_brain"``, ``"accuracy_brain"``
        counted over brain voxels only (specificity and accuracy are much lower there than over a
        volume that is mostly air).

    Example::

        >>> segmentation_metrics(pred, ref, spacing=(1.0, 1.0, 1.0))["WT"]["dice"]
    """
    _check_same_shape(pred_labels, ref_labels, "prediction labels", "reference labels")
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
        metrics["hd95"] = hd95(p, r, spacing)
        if brain_mask is not None:
            inside = overlap_metrics(p, r, roi=brain_mask)
            for name in ("dice", "sensitivity", "specificity", "accuracy"):
                metrics[f"{name}_brain"] = inside[name]
        results[region] = metrics
    return results
