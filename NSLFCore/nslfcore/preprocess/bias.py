"""Optional N4 bias-field correction (SimpleITK's ``N4BiasFieldCorrectionImageFilter``; issue 32).

The field is estimated inside the brain mask on a copy shrunk by :data:`SHRINK` (N4's usual speed-up)
and applied to the full-resolution image through ``GetLogBiasFieldAsImage``; voxels outside the
mask keep their values divided by the same smooth field. Images are ``SimpleITK.Image`` (indexed
``(x, y, z)``, mm, LPS).
"""

from __future__ import annotations

import SimpleITK as sitk

SHRINK = 4
"""The shrink factor of the grid the bias field is estimated on."""

ITERATIONS = (50, 50, 30)
"""N4's iterations per fitting level (three levels)."""


def correct_bias(image: sitk.Image, mask: sitk.Image, *, shrink: int = SHRINK) -> sitk.Image:
    """``image`` (float32) divided by its N4 bias field estimated inside ``mask``.

    Args:
        image: an MR image (any pixel type; float32 returned), on ``mask``'s grid.
        mask: the brain mask (non-zero = brain), same grid.
        shrink: the estimate's shrink factor per axis (axes shorter than 8 shrunk voxels are not shrunk).

    Returns:
        The corrected image, float32, same grid.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    factors = [shrink if size // shrink >= 8 else 1 for size in image.GetSize()]
    small_image = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(ITERATIONS))
    # N4 needs positive intensities: shift the image so its masked minimum is 1.
    corrector.Execute(sitk.Maximum(small_image, 0.0) + 1.0, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    return sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)
