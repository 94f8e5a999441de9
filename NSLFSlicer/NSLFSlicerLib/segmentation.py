"""A segmentation node from a BraTS 2021 label map: three tagged, coloured segments with closed surfaces.

Label maps are uint8 ``(z, y, x)`` arrays in BraTS 2021 labels {0, 1, 2, 4} on a reference volume's
grid; each segment's binary labelmap is a ``vtkOrientedImageData`` with that volume's IJK-to-RAS
matrix, and the node's reference image geometry is that volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from .mrml_io import array_view, image_data_from_array, ijk_to_ras, vtk_matrix
from .terminology import BRAIN, SegmentSpec, segment_specs

BINARY_LABELMAP = "Binary labelmap"
CLOSED_SURFACE = "Closed surface"


def oriented_mask(mask: np.ndarray, reference: Any) -> Any:
    """A ``vtkOrientedImageData`` (uint8 0/1) of a boolean ``(z, y, x)`` mask on ``reference``'s grid (RAS)."""
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(image_data_from_array(mask.astype(np.uint8)))
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras(reference)))
    return image


def replace_segments(node: Any, segments: list[tuple[SegmentSpec, np.ndarray]], reference: Any) -> None:
    """Replace every segment of ``node`` with one binary-labelmap segment per ``(spec, boolean (z, y, x) mask)``.

    The masks are on ``reference``'s grid, which becomes the node's reference geometry; each
    segment gets its spec's ID, name, colour and terminology tag.
    """
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    segmentation = node.GetSegmentation()
    was_modifying = node.StartModify()
    try:
        segmentation.RemoveAllSegments()
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        for spec, mask in segments:
            segment = slicer.vtkSegment()
            segment.SetName(spec.name)
            segment.SetColor(*spec.color)
            segment.SetTerminology(spec.terminology)
            segment.AddRepresentation(BINARY_LABELMAP, oriented_mask(mask, reference))
            segmentation.AddSegment(segment, spec.segment_id)
    finally:
        node.EndModify(was_modifying)


def fill_segmentation(node: Any, labels: np.ndarray, reference: Any) -> None:
    """Replace every segment of ``node`` with the three tumour segments of ``labels`` (BraTS 2021, ``(z, y, x)``).

    Sets the reference geometry to ``reference``, the segments' names, colours and terminology
    tags (:mod:`.terminology`), and creates the closed-surface representation (shown in 3-D).
    """
    replace_segments(node, [(spec, labels == spec.label) for spec in segment_specs()], reference)
    node.CreateClosedSurfaceRepresentation()
    display = node.GetDisplayNode()
    display.SetPreferredDisplayRepresentationName3D(CLOSED_SURFACE)
    display.SetVisibility(True)


def fill_brain_segmentation(node: Any, mask: np.ndarray, reference: Any) -> None:
    """Replace every segment of ``node`` with one "Brain" segment (:data:`.terminology.BRAIN`) of a ``(z, y, x)`` mask.

    ``mask`` (non-zero = brain) is on ``reference``'s grid, which becomes the node's reference
    geometry. Shown as an outline in the slice views only: a closed surface of the whole brain would
    hide the tumour in 3-D.
    """
    replace_segments(node, [(BRAIN, np.asarray(mask) > 0)], reference)
    display = node.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility3D(False)
    display.SetAllSegmentsOpacity2DFill(0.0)


def labels_from_segmentation(node: Any, reference: Any, segmentations_logic: Any) -> np.ndarray:
    """BraTS 2021 labels ``(z, y, x)`` of ``node``'s tumour segments on ``reference``'s grid.

    Exports through a temporary labelmap node that is removed again; segments are matched by
    terminology-file name.
    """
    scene = node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        out = np.zeros(array_view(reference).shape, dtype=np.uint8)
        for spec in segment_specs():
            segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(spec.name)
            if not segment_id:
                continue
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            segmentations_logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference)
            out[np.asarray(array_view(labelmap)) > 0] = spec.label
        return out
    finally:
        for i in range(labelmap.GetNumberOfDisplayNodes()):
            scene.RemoveNode(labelmap.GetNthDisplayNode(i))
        scene.RemoveNode(labelmap)
