"""Saving a run's results: fused volume, segmentation, table and a scene bundle that opens in Slicer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .logic import NSLFOutputs
from .mrml_io import save_node

FILES = {"fused": "fused.nii.gz", "segmentation": "segmentation.seg.nrrd", "table": "tumor_volumes.csv", "scene": "scene.mrb"}


def save_results(scene: Any, outputs: NSLFOutputs, out_dir: str | Path) -> dict[str, Path]:
    """Write the outputs (names in :data:`FILES`) and the whole scene as ``scene.mrb``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key in ("fused", "segmentation", "table"):
        node = getattr(outputs, key)
        if node is not None:
            paths[key] = save_node(node, out_dir / FILES[key])
    mrb = out_dir / FILES["scene"]
    if not scene.WriteToMRB(str(mrb)):
        raise OSError(f"Could not write the scene bundle {mrb}; check the folder is writable.")
    paths["scene"] = mrb
    return paths
