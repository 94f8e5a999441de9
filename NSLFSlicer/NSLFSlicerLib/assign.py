"""Which volume is which modality, by name: the engine's one rule (:mod:`nslfcore.data.modality_names`).

Node names (:func:`assign_inputs`) and the files of a case folder (:func:`load_case_folder`, matched
as :func:`nslfcore.data.discovery.match_files` matches them) are read alike: BraTS 2021 and 2023
suffixes and the common spellings (``T1Gd``, ``T1post``, ``T2w``, ``FLAIR``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import ensure_engine_on_path
from .checks import LABELS, InputError
from .mrml_io import load_volume, volume_nodes

ensure_engine_on_path()
from nslfcore import MODALITIES  # noqa: E402
from nslfcore.data.discovery import match_files  # noqa: E402
from nslfcore.data.modality_names import modality_of  # noqa: E402


def assign_inputs(scene_or_nodes: Any) -> dict[str, Any]:
    """Map modalities to volume nodes by name; from a scene (its non-labelmap scalar volumes) or nodes.

    Nodes whose name contains ``NSLF`` (our outputs) or denotes a segmentation are ignored. Returns
    only the modalities found; raises :class:`InputError` when two nodes claim one modality.
    """
    if hasattr(scene_or_nodes, "GetNodesByClass"):
        nodes: Iterable[Any] = volume_nodes(scene_or_nodes)
    else:
        nodes = scene_or_nodes
    found: dict[str, Any] = {}
    for node in nodes:
        if node is None or "nslf" in node.GetName().lower():
            continue
        modality = modality_of(node.GetName())
        if modality not in MODALITIES:
            continue
        if modality in found:
            raise InputError(
                [f"Both '{found[modality].GetName()}' and '{node.GetName()}' look like the {LABELS[modality]} volume; "
                 "select the inputs by hand."]
            )
        found[modality] = node
    return found


def load_case_folder(context: Any, case_dir: str | Path) -> dict[str, Any]:
    """Load a case folder's modality files (not the segmentation) through storage nodes, by file name.

    Returns only the modalities found; raises :class:`InputError` when two files claim one modality.
    """
    files = match_files(Path(case_dir).name, Path(case_dir))
    if files.problems:
        raise InputError(files.problems)
    return {modality: load_volume(context.volumes, path) for modality, path in files.images.items()}
