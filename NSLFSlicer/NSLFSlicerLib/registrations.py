"""The registrations of a preprocessed run (issue 32) as Slicer linear transform nodes.

The engine writes each registration as an ITK transform file (``.tfm``, :func:`SimpleITK.WriteTransform`):
a *resampling* transform, mapping a point of the fixed image (the reference, or the atlas) to the
point of the moving image (the sequence, or the reference), in LPS mm. Slicer's transform storage
node reads such a file as the node's *from-parent* transform, converted to RAS: so the node maps
a reference point to the sequence's point, and its *to-parent* transform (the inverse) maps the
sequence onto the reference. Putting the sequence's volume node under the transform node shows it
co-registered with the reference (Transforms module: harden to resample it).

Reading through Slicer's own storage node (rather than converting matrices here) keeps one
convention: the one Slicer uses for every ``.tfm`` a user loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .mrml_io import new_node


def load_transform(scene: Any, path: str | Path, name: str) -> Any:
    """A new ``vtkMRMLLinearTransformNode`` named ``name`` (made unique) from the ITK transform file ``path``.

    The storage node used to read it is removed again (the file is usually a temporary one); saving
    the scene writes the transform anew. Raises ``OSError`` naming the file when it cannot be read.
    """
    node = new_node(scene, "vtkMRMLLinearTransformNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            scene.RemoveNode(node)
            raise OSError(f"Could not read the transform file {path}; it is not an ITK linear transform.")
    finally:
        node.SetAndObserveStorageNodeID(None)
        scene.RemoveNode(storage)
    return node
