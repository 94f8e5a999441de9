"""Placing output nodes in the subject hierarchy next to the inputs (under the inputs' study, if any).

Inside Slicer, subject-hierarchy items of data nodes are made by Qt plugins as nodes are added;
with slicer-core alone they are not, so :func:`item_of` creates a missing item at the scene level.
"""

from __future__ import annotations

from typing import Any


def item_of(node: Any) -> int:
    """The node's subject-hierarchy item ID, created under the scene item if missing."""
    sh = node.GetScene().GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(node)
    return item or sh.CreateItem(sh.GetSceneItemID(), node)


def study_of(node: Any) -> int:
    """Subject-hierarchy item ID of ``node``'s parent (its study when loaded from DICOM or placed there)."""
    return node.GetScene().GetSubjectHierarchyNode().GetItemParent(item_of(node))


def place_with(nodes: list[Any], reference: Any) -> None:
    """Put each of ``nodes`` under the subject-hierarchy parent (e.g. the study) of ``reference``."""
    sh = reference.GetScene().GetSubjectHierarchyNode()
    parent = study_of(reference)
    for node in nodes:
        item = item_of(node)
        if sh.GetItemParent(item) != parent:
            sh.SetItemParent(item, parent)
