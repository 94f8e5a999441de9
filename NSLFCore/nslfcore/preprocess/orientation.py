"""Orientation and resampling of SimpleITK images (geometry ``(x, y, z)``, mm, LPS).

:func:`to_lps` permutes and flips an image's voxel axes so that they run as close as possible to
+x, +y, +z of the LPS patient frame, without moving any voxel in space. :func:`resample_like` puts
one image on another's grid, optionally through a transform.

The orientation code is ITK's ``DICOMOrientImageFilter`` code (ITK >= 5.1, SimpleITK's
``sitk.DICOMOrient``): each letter names the anatomical direction toward which the voxel index
*increases* along that axis (DICOM's convention). ``"LPS"`` thus means index ``i`` increases toward
the patient's Left, ``j`` toward Posterior, ``k`` toward Superior: the identity direction matrix
in ITK's LPS physical frame (Slicer calls the same grid "LPS"; its RAS frame flips x and y). The
older ``itk::SpatialOrientation`` codes name the opposite ends ("RAI" for this same grid); they
are not used here.
"""

from __future__ import annotations

import math
from typing import Literal

import SimpleITK as sitk

Interpolator = Literal["linear", "nearest"]

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def to_lps(image: sitk.Image) -> sitk.Image:
    """``image`` with its voxel axes permuted and flipped to the LPS-aligned order (``sitk.DICOMOrient(image, "LPS")``).

    Every voxel keeps its physical (LPS, mm) position and value; only the index order, the origin
    (the new first voxel's centre), the spacing order and the direction matrix change. An
    axis-aligned image comes back with the identity direction; an oblique one keeps its obliquity,
    with each axis assigned to the closest of +x (left), +y (posterior), +z (superior). Nothing is
    interpolated. The array of the result (``sitk.GetArrayFromImage``) is ``(z, y, x)``:
    inferior-to-superior slices, anterior-to-posterior rows, right-to-left columns.

    Example:
        >>> img = sitk.Image(4, 5, 6, sitk.sitkFloat32); img.SetDirection((-1, 0, 0, 0, 0, 1, 0, 1, 0))
        >>> to_lps(img).GetDirection()
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    """
    if image.GetDimension() != 3:
        raise ValueError(f"to_lps takes a 3-D image, not a {image.GetDimension()}-D one.")
    return sitk.DICOMOrient(image, "LPS")


def resample_like(
    moving: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    interpolator: Interpolator = "linear",
    default: float = 0.0,
) -> sitk.Image:
    """``moving`` sampled on ``reference``'s grid (size, spacing, origin, direction).

    Args:
        moving: the image to resample (any grid, LPS).
        reference: the grid to sample on; its voxel values are not used.
        transform: maps a point of the reference's space (LPS mm) to the moving image's space, as
            ITK transforms do (the transform :func:`~nslfcore.preprocess.registration.register_rigid`
            returns with ``fixed=reference``); ``None``: identity (same physical frame).
        interpolator: ``"linear"`` for intensities, ``"nearest"`` for labels and masks.
        default: the value of reference voxels that fall outside ``moving``.

    Returns:
        An image of ``moving``'s pixel type on ``reference``'s grid.
    """
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator {interpolator!r} must be one of {sorted(_INTERPOLATORS)}.")
    return sitk.Resample(
        moving,
        reference,
        transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity),
        _INTERPOLATORS[interpolator],
        float(default),
        moving.GetPixelID(),
    )


def isotropic_copy(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` (float32) smoothed (Gaussian, so that coarser voxels average rather than alias) and resampled
    (linear) to ``spacing`` mm along its own axes, over the same field of view: a working copy for registration."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    sigmas = [0.5 * math.sqrt(max(spacing**2 - s**2, 0.0)) for s in image.GetSpacing()]
    if max(sigmas) > 0:
        image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigmas])
    size = [max(1, int(round(n * s / spacing))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing] * 3)
    grid.SetDirection(image.GetDirection())
    first = [(spacing / s - 1.0) / 2.0 for s in image.GetSpacing()]  # keep the field of view's centre
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(first))
    return resample_like(image, grid, None, "linear")
