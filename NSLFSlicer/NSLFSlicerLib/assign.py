"""Which volume is which modality, from node names (BraTS 2021 and 2023 suffixes and common spellings).

Rules, tried in this order on the lower-case name: T1ce ``t1ce``/``t1c``/``t1gd``; FLAIR
``flair``/``t2f``; T2 ``t2w``/``t2``; T1 ``t1n``/``t1w``/``t1`` (a digit may not follow ``t1``/``t2``).
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from .checks import LABELS, InputError
from .mrml_io import load_volume, volume_nodes

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("t1ce", re.compile(r"t1[-_ ]?(ce|c|gd)(?![a-z0-9])|t1[-_ ]?(ce|gd)")),
    ("flair", re.compile(r"flair|t2f(?![a-z0-9])")),
    ("t2", re.compile(r"t2(w|(?![0-9]))")),
    ("t1", re.compile(r"t1(n|w|(?![0-9]))")),
)


def modality_of(name: str) -> str | None:
    """The modality a node name denotes (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``) or ``None``."""
    lower = name.lower()
    for modality, pattern in PATTERNS:
        if pattern.search(lower):
            return modality
    return None


def assign_inputs(scene_or_nodes: Any) -> dict[str, Any]:
    """Map modalities to volume nodes by name; from a scene (its non-labelmap scalar volumes) or nodes.

    Nodes whose name contains ``NSLF`` (our outputs) are ignored. Returns only the modalities found;
    raises :class:`InputError` when two nodes claim one modality.
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
        if modality is None:
            continue
        if modality in found:
            raise InputError(
                [f"Both '{found[modality].GetName()}' and '{node.GetName()}' look like the {LABELS[modality]} volume; "
                 "select the inputs by hand."]
            )
        found[modality] = node
    return found


def load_case_folder(context: Any, case_dir: str | Path) -> dict[str, Any]:
    """Load a case folder's image files (not ``*seg*``) through storage nodes and assign them by file name."""
    files = sorted(p for p in Path(case_dir).iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd")))
    return assign_inputs([load_volume(context.volumes, p) for p in files if "seg" not in p.name.lower()])
