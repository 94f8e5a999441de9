"""Reading and writing single volumes with SimpleITK, keeping the grid.

Arrays are ``(z, y, x)`` (SimpleITK order); geometry is ``(x, y, z)``, mm, LPS
(see :mod:`nslfcore.data.case`). Formats: anything SimpleITK reads (``.nii``, ``.nii.gz``,
``.nrrd``, ``.mha``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore.data.case import Geometry
from nslfcore.data.output import install, temporary_path

#: File name endings recognised as images.
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def strip_suffix(name: str) -> str | None:
    """The file name without its image suffix, or ``None`` if it is not an image file name."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def missing_file_reason(path: str | Path) -> str:
    """Why ``path`` is not a readable file, in words a user can act on (not always "it does not exist")."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"{path} is a symbolic link to nothing (dangling, or a loop); point it at the image file"
    for parent in [*reversed(path.parents)]:
        if parent.exists() and not os.access(parent, os.X_OK):
            return f"{path} cannot be reached: permission denied on the folder {parent}; fix its permissions"
    if path.is_dir():
        return f"{path} is a folder, not an image file; give the file"
    if path.exists() and not os.access(path, os.R_OK):
        return f"{path} is not readable (permission denied); fix its permissions"
    return f"{path} does not exist; check the path"


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a volume; returns its voxel array ``(z, y, x)`` (file dtype) and :class:`Geometry`.

    Raises ``RuntimeError`` (from SimpleITK) when the file cannot be read. Images that are not
    3-D (2-D, 4-D, or multi-component) are returned as they are; check ``array.ndim``.
    """
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        return array, Geometry(size=(0, 0, 0), spacing=(1.0, 1.0, 1.0))
    return array, Geometry.from_image(image)


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path, dtype: np.dtype | type | None = None) -> Path:
    """Write a ``(z, y, x)`` array on ``geometry`` to ``path`` (format from the suffix, compressed).

    ``dtype`` converts the voxels first (e.g. ``np.int16``, ``np.uint8``); values are rounded for
    integer types. Atomic and verified: a temporary file is written, read back completely and
    renamed onto ``path``, so ``path`` is either the previous file or the complete new one; a
    failed write (a full disk) raises ``OSError``. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array)
    if dtype is not None:
        if np.issubdtype(np.dtype(dtype), np.integer) and not np.issubdtype(data.dtype, np.integer):
            info = np.iinfo(dtype)
            data = np.clip(np.rint(data), info.min, info.max)
        data = data.astype(dtype)
    # SimpleITK reports no error when a write runs out of disk and leaves a truncated file: write to a
    # temporary name beside the target, read it back, then rename (nslfcore.data.output).
    temp = temporary_path(path)
    try:
        sitk.WriteImage(geometry.to_image(data), str(temp), True)
        install([(temp, path)])
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
