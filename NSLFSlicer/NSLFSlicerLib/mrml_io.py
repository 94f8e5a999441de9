"""Volume nodes <-> numpy arrays and :class:`nslfcore.data.case.Case`; reading and writing with storage nodes.

Conventions: arrays are ``(z, y, x)`` = ``(k, j, i)`` (like SimpleITK and ``slicer.util.arrayFromVolume``).
A node's IJK-to-RAS matrix maps ``(i, j, k, 1)`` to RAS mm; the engine's geometry is LPS, and
``RAS = diag(-1, -1, 1) @ LPS`` (:data:`RAS_FROM_LPS`, its own inverse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import vtk
from vtk.util import numpy_support

from . import ensure_engine_on_path

ensure_engine_on_path()
from nslfcore import MODALITIES  # noqa: E402
from nslfcore.data.case import Case, Geometry  # noqa: E402

#: 4x4 matrix turning LPS coordinates into RAS (and back).
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ijk_to_ras(node: Any) -> np.ndarray:
    """The node's 4x4 voxel ``(i, j, k, 1)`` -> RAS mm matrix (its own grid, parent transforms ignored)."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A ``vtkMatrix4x4`` from a 4x4 numpy array."""
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def geometry_of(node: Any) -> Geometry:
    """The engine's :class:`Geometry` (``(x, y, z)`` sizes, mm, LPS) of a volume node."""
    dims = node.GetImageData().GetDimensions()
    return Geometry.from_matrix(tuple(dims), RAS_FROM_LPS @ ijk_to_ras(node))  # type: ignore[arg-type]


def ras_matrix(geometry: Geometry) -> np.ndarray:
    """IJK-to-RAS 4x4 matrix of an engine :class:`Geometry` (LPS)."""
    return RAS_FROM_LPS @ geometry.ijk_to_lps()


def array_view(node: Any) -> np.ndarray:
    """The node's voxels as a read-only numpy view ``(z, y, x)`` (components dropped only if there is one)."""
    image = node.GetImageData()
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    comps = image.GetNumberOfScalarComponents()
    shape = (dims[2], dims[1], dims[0]) if comps == 1 else (dims[2], dims[1], dims[0], comps)
    view = flat.reshape(shape)
    view.flags.writeable = False
    return view


def array_from_volume(node: Any, dtype: type = np.float32) -> np.ndarray:
    """A copy of the node's voxels as ``dtype`` ``(z, y, x)``."""
    return np.array(array_view(node), dtype=dtype, copy=True)


def image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    """A ``vtkImageData`` holding a deep copy of a ``(z, y, x)`` array (origin 0, spacing 1: geometry lives in the node)."""
    array = np.ascontiguousarray(array)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def set_volume(node: Any, array: np.ndarray, reference: Any) -> None:
    """Fill ``node`` with a ``(z, y, x)`` array on exactly ``reference``'s grid (IJK-to-RAS copied)."""
    node.CopyOrientation(reference)
    node.SetAndObserveImageData(image_data_from_array(array))


def case_from_nodes(
    nodes: dict[str, Any], name: str, arrays: dict[str, np.ndarray] | None = None, reference: str = "t1"
) -> Case:
    """A :class:`Case` of the modality nodes (keys :data:`nslfcore.MODALITIES`), on the ``reference`` node's grid (LPS).

    A ``None`` node is a missing modality (left out of the case: :attr:`Case.missing`). ``arrays``
    replaces a node's voxels (e.g. after resampling to the reference grid).
    """
    arrays = arrays or {}
    images = {m: arrays[m] if m in arrays else array_from_volume(nodes[m]) for m in MODALITIES if nodes.get(m) is not None}
    return Case(name=name, images=images, label=None, geometry=geometry_of(nodes[reference]))


def write_volume(node: Any, path: str | Path) -> Path:
    """Write the node's voxels (float32) on its own grid to ``path`` (NIfTI or NRRD from the suffix); returns the path."""
    from nslfcore.data.io import write_image

    return write_image(array_from_volume(node), geometry_of(node), path, np.float32)


def load_volume(volumes_logic: Any, path: str | Path, name: str | None = None, labelmap: bool = False) -> Any:
    """Read an image file into a new volume node via ``vtkSlicerVolumesLogic.AddArchetypeVolume`` (storage node kept).

    Raises ``OSError`` naming the file when it cannot be read.
    """
    path = Path(path)
    node = volumes_logic.AddArchetypeVolume(str(path), name or case_part(path.name), 1 if labelmap else 0)
    if node is None:
        raise OSError(f"Could not read the volume file {path}; check that it exists and is a NIfTI or NRRD image.")
    return node


def case_part(file_name: str) -> str:
    """A file name without its image extension (``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.mha``)."""
    for ext in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if file_name.lower().endswith(ext):
            return file_name[: -len(ext)]
    return file_name


def save_node(node: Any, path: str | Path) -> Path:
    """Write a storable node (volume, segmentation, table) to ``path`` through its storage node."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = node.GetStorageNode()
    if storage is None:
        node.AddDefaultStorageNode()
        storage = node.GetStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"Could not write node '{node.GetName()}' to {path}; check the folder is writable.")
    return path


def new_node(scene: Any, class_name: str, name: str) -> Any:
    """Add a node of ``class_name`` named ``name`` (made unique in the scene)."""
    return scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))


def volume_nodes(scene: Any) -> list[Any]:
    """Scalar volume nodes of the scene that are not labelmaps, in scene order."""
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    out = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return [n for n in out if not n.IsA("vtkMRMLLabelMapVolumeNode")]


__all__ = [
    "RAS_FROM_LPS", "array_from_volume", "array_view", "case_from_nodes", "geometry_of", "ijk_to_ras",
    "image_data_from_array", "load_volume", "new_node", "ras_matrix", "save_node", "set_volume",
    "volume_nodes", "vtk_matrix", "write_volume",
]  # fmt: skip
