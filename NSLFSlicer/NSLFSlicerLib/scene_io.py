"""Saving a run's results: fused volume, segmentation, BraTS label map, table and a scene bundle that opens in Slicer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import ensure_engine_on_path
from .logic import NSLFOutputs
from .mrml_io import geometry_of, save_node
from .segmentation import labels_from_segmentation

ensure_engine_on_path()
from nslfcore.data.io import write_image  # noqa: E402

FILES = {
    "fused": "fused.nii.gz", "segmentation": "segmentation.seg.nrrd", "labels": "labels.nii.gz",
    "table": "tumor_volumes.csv", "scene": "scene.mrb",
}  # fmt: skip


def existing_results(out_dir: str | Path, extra: tuple[str, ...] = ()) -> list[Path]:
    """The result files (:data:`FILES` and ``extra`` names) already in ``out_dir``."""
    return [p for name in (*FILES.values(), *extra) if (p := Path(out_dir) / name).exists()]


def save_results(scene: Any, outputs: NSLFOutputs, out_dir: str | Path, reference: Any, segmentations_logic: Any) -> dict[str, Path]:
    """Write the outputs (names in :data:`FILES`) and the whole scene as ``scene.mrb``; returns the paths.

    ``labels.nii.gz`` is the segmentation as a BraTS 2021 label map (uint8 {0, 1, 2, 4}) on
    ``reference``'s grid (the T1 volume node), for tools that read label maps rather than
    ``.seg.nrrd`` segmentations.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key in ("fused", "segmentation", "table"):
        node = getattr(outputs, key)
        if node is not None:
            paths[key] = save_node(node, out_dir / FILES[key])
    if outputs.segmentation is not None:
        labels = labels_from_segmentation(outputs.segmentation, reference, segmentations_logic)
        paths["labels"] = write_image(labels, geometry_of(reference), out_dir / FILES["labels"], np.uint8)
    mrb = out_dir / FILES["scene"]
    if not scene.WriteToMRB(str(mrb)):
        raise OSError(f"Could not write the scene bundle {mrb}; check the folder is writable.")
    paths["scene"] = mrb
    return paths
