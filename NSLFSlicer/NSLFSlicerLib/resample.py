"""Resampling a volume onto another grid (the T1 grid) with SimpleITK, without touching any node.

Arrays are ``(z, y, x)``; geometries are the engine's (``(x, y, z)``, mm, LPS).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from . import ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.data.case import Geometry  # noqa: E402


def resample_to(array: np.ndarray, geometry: Geometry, reference: Geometry) -> np.ndarray:
    """Linearly resample ``array`` ``(z, y, x)`` on ``geometry`` onto ``reference``; outside voxels are 0 (float32)."""
    moving = geometry.to_image(np.asarray(array, dtype=np.float32))
    grid = reference.to_image(np.zeros(reference.shape, dtype=np.float32))
    out = sitk.Resample(moving, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
