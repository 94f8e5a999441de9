"""Does an exam need ``--preprocess``? One sentence saying why, from the images' grids and one image's voxels (issue 32, point 3).

The model was trained on BraTS-preprocessed cases: four co-registered, skull-stripped sequences on
one ~1 mm axis-aligned grid. An exam needs preprocessing when

* its sequences' grids differ (size, spacing, origin or direction beyond the tolerances of
  :func:`nslfcore.data.validation.geometry_differences`),
* a voxel is coarser than :data:`MAX_SPACING_MM` along any axis (thick slices),
* its grid is oblique (an axis more than :data:`MAX_OBLIQUE_DEGREES` from the nearest LPS axis), or
* a head is imaged, not a brain: the reference sequence's foreground (:func:`foreground_ml`: voxels above
  10 % of its 99.5th percentile) exceeds :data:`MAX_BRAIN_ML` (a skull-stripped adult brain holds about 1.1-1.7 l; a
  head with scalp, fat and neck well over 2.5 l).

:func:`preprocessing_reasons` lists the reasons (sentence fragments) from the grids
(:class:`~nslfcore.data.case.Geometry`, ``(x, y, z)``, mm, LPS; :func:`read_grids` reads them from
file headers) and optionally one image; :func:`preprocessing_advice` joins them into the one
sentence that the command line, the Python API and the Slicer panel show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore.data.case import Geometry
from nslfcore.data.validation import geometry_differences

MAX_SPACING_MM = 1.5
"""The coarsest voxel (mm, any axis) the model handles without resampling."""

MAX_OBLIQUE_DEGREES = 3.0
"""The largest angle between a grid axis and the nearest LPS axis that is not "oblique"."""

MAX_BRAIN_ML = 2200.0
"""A foreground larger than this (ml) is a head with its skull, not a skull-stripped brain."""

TISSUE_FRACTION = 0.1
"""Tissue is what is brighter than this fraction of the 99.5th percentile (:func:`foreground_ml`)."""

TISSUE_SAMPLE_VOXELS = 2_000_000
"""At most this many voxels are looked at by :func:`foreground_ml` (a regular subsample)."""


DIFFERENT_GRIDS = "the sequences lie on different grids"
"""The first reason :func:`preprocessing_reasons` gives when the grids differ."""


def obliquity_degrees(grid: Geometry) -> float:
    """The largest angle (degrees) between one of the grid's axes and the LPS axis nearest to it."""
    direction = np.asarray(grid.direction, dtype=float).reshape(3, 3)
    cosines = np.abs(direction).max(axis=0).clip(-1.0, 1.0)
    return float(max(math.degrees(math.acos(c)) for c in cosines))


def foreground_ml(values: np.ndarray, spacing: Sequence[float]) -> float:
    """The volume (ml) of the voxels brighter than :data:`TISSUE_FRACTION` of the 99.5th percentile: the imaged tissue.

    A skull-stripped brain is 0 outside the brain, so its tissue is the brain's 1-1.8 l; a raw head
    adds scalp fat, muscle, the marrow of the skull and the neck, 3 l or more (cortical bone and
    noise stay below the threshold). ``values``: the voxel array (any axis order); ``spacing``: the
    voxel size (mm, any order). Computed on a regular subsample of at most :data:`TISSUE_SAMPLE_VOXELS`.
    """
    step = max(1, int(np.ceil((values.size / TISSUE_SAMPLE_VOXELS) ** (1 / 3))))
    sample = np.asarray(values[::step, ::step, ::step])
    high = float(np.percentile(sample, 99.5))
    if not np.isfinite(high) or high <= 0:
        return 0.0
    fraction = float(np.count_nonzero(sample > TISSUE_FRACTION * high)) / sample.size
    return fraction * values.size * float(np.prod(spacing)) / 1000.0


def preprocessing_reasons(grids: Mapping[str, Geometry], head: sitk.Image | None = None) -> list[str]:
    """Why an exam is not model-ready (sentence fragments; ``[]``: it is).

    Args:
        grids: sequence name -> its grid (:class:`~nslfcore.data.case.Geometry`; :func:`read_grids` reads them
            from file headers).
        head: the reference sequence's image (T1ce) to check for a head, or ``None`` to skip that check.
    """
    reasons = []
    listed = list(grids.values())
    if any(geometry_differences(listed[0], grid) for grid in listed[1:]):
        reasons.append(DIFFERENT_GRIDS)
    coarsest = max((max(grid.spacing) for grid in listed), default=0.0)
    if coarsest > MAX_SPACING_MM:
        reasons.append(f"their voxels are up to {coarsest:.1f} mm (thick slices)")
    oblique = max((obliquity_degrees(grid) for grid in listed), default=0.0)
    if oblique > MAX_OBLIQUE_DEGREES:
        reasons.append(f"their slices are oblique ({oblique:.0f} degrees)")
    if head is not None:
        volume = foreground_ml(sitk.GetArrayViewFromImage(head), head.GetSpacing())
        if volume > MAX_BRAIN_ML:
            reasons.append(f"it shows a head, not a skull-stripped brain ({volume / 1000:.1f} l of tissue)")
    return reasons


def preprocessing_advice(reasons: list[str], name: str = "The exam") -> str | None:
    """The one sentence saying that an exam needs preprocessing (``reasons`` from :func:`preprocessing_reasons`)
    and how to ask for it, or ``None`` when there is no reason."""
    if not reasons:
        return None
    listed = reasons[0] if len(reasons) == 1 else ", ".join(reasons[:-1]) + " and " + reasons[-1]
    return (
        f"{name} looks like a raw exam ({listed}); run it with --preprocess (Python: preprocess=True; Slicer: "
        "the 'Raw scans: register and skull-strip' option) to co-register, skull-strip and align it to the atlas first."
    )


def read_grids(paths: Mapping[str, str | Path]) -> dict[str, Geometry]:
    """Each readable 3-D file's grid, from its header only (no voxels read); unreadable files are left out
    (the file checks report them)."""
    out: dict[str, Geometry] = {}
    for name, path in paths.items():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue
        if reader.GetDimension() != 3:
            continue
        d = [float(v) for v in reader.GetDirection()]
        out[name] = Geometry(
            size=tuple(int(v) for v in reader.GetSize()),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in reader.GetSpacing()),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in reader.GetOrigin()),  # type: ignore[arg-type]
            direction=(tuple(d[0:3]), tuple(d[3:6]), tuple(d[6:9])),  # type: ignore[arg-type]
        )
    return out
