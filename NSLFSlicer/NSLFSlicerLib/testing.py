"""The test scenario shared by CI (``Testing/Python``, pytest, slicer-core) and ``NSLFSlicerTest`` (in Slicer).

Scenario: a tiny phantom case (48^3 voxels) on an OBLIQUE grid is written as BraTS 2021 NIfTI,
loaded through storage nodes, its inputs placed in a subject-hierarchy study, and processed with a
random-weight ``compact`` NSLF model; :func:`check_outputs` then verifies every node the logic wrote.
Every check raises ``AssertionError`` with a message saying what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import ensure_engine_on_path
from .app_setup import SlicerContext
from .assign import load_case_folder as load_case_nodes
from .hierarchy import item_of, study_of
from .logic import NSLFLogicCore, NSLFOutputs
from .mrml_io import array_view, ijk_to_ras
from .tables import REGIONS, TABLE_NAME, table_rows
from .terminology import segment_specs

ensure_engine_on_path()
from nslfcore import MODALITIES  # noqa: E402

TINY_SIZE = (48, 48, 48)


def oblique_direction(degrees_z: float = 25.0, degrees_x: float = 10.0) -> tuple[tuple[float, ...], ...]:
    """An LPS direction matrix rotated about z then x (row-major 3x3)."""
    a, b = np.radians(degrees_z), np.radians(degrees_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple(tuple(float(v) for v in row) for row in rx @ rz)


def write_phantom(out_dir: str | Path, seed: int = 0, size: tuple[int, int, int] = TINY_SIZE, oblique: bool = True) -> Path:
    """Write a tiny phantom case (BraTS 2021 layout); oblique grid with 1.1 x 0.9 x 1.2 mm spacing if ``oblique``."""
    from nslfcore.data.phantom import generate_tiny_case, write_case

    case = generate_tiny_case(seed, size)
    if oblique:
        geometry = replace(case.geometry, spacing=(1.1, 0.9, 1.2), origin=(12.5, -30.25, 7.0), direction=oblique_direction())
        case = replace(case, geometry=geometry)
    return write_case(case, out_dir)


def write_random_model(path: str | Path, seed: int = 0) -> Path:
    """A random-weight ``compact`` NSLF checkpoint at ``path`` (for tests)."""
    import torch
    from nslfcore.config import PRESETS
    from nslfcore.model_store import save_model
    from nslfcore.models import NSLF

    torch.manual_seed(seed)
    return save_model(NSLF(PRESETS["compact"]), path, stage=3, epoch=1, best_metric=None)


def reference_labels(case_dir: str | Path) -> np.ndarray:
    """The case's ``*_seg.nii.gz`` labels ``(z, y, x)`` (BraTS 2021)."""
    import SimpleITK as sitk

    seg = next(Path(case_dir).glob("*seg.nii*"))
    return sitk.GetArrayFromImage(sitk.ReadImage(str(seg)))


def put_in_study(nodes: dict[str, Any], patient: str = "Phantom patient", study: str = "Phantom study") -> int:
    """Create a patient/study in the subject hierarchy and move the inputs under the study; returns its item ID."""
    scene = nodes["t1"].GetScene()
    sh = scene.GetSubjectHierarchyNode()
    patient_item = sh.CreateSubjectItem(sh.GetSceneItemID(), patient)
    study_item = sh.CreateStudyItem(patient_item, study)
    for node in nodes.values():
        sh.SetItemParent(item_of(node), study_item)
    return study_item


def check_outputs(nodes: dict[str, Any], outputs: NSLFOutputs, expected_labels: np.ndarray | None = None) -> None:
    """Assert everything the logic promises about its outputs (see the module docstring)."""
    t1 = nodes["t1"]
    fused, seg, table = outputs.fused, outputs.segmentation, outputs.table
    assert fused is not None and fused.IsA("vtkMRMLScalarVolumeNode"), "no fused scalar volume node"
    assert np.array_equal(ijk_to_ras(fused), ijk_to_ras(t1)), f"fused IJK-to-RAS differs:\n{ijk_to_ras(fused)}\n{ijk_to_ras(t1)}"
    assert fused.GetImageData().GetDimensions() == t1.GetImageData().GetDimensions(), "fused dimensions differ from T1"
    assert "NSLF fused" in fused.GetName(), f"fused node name {fused.GetName()!r}"
    values = array_view(fused)
    assert np.isfinite(values).all() and values.max() > 0, "fused volume is empty or not finite"
    displays = [fused.GetNthDisplayNode(i) for i in range(fused.GetNumberOfDisplayNodes())]
    vr_nodes = [d for d in displays if d is not None and d.IsA("vtkMRMLVolumeRenderingDisplayNode")]
    assert vr_nodes and vr_nodes[0].GetVisibility(), "no visible volume rendering display node on the fused volume"
    assert vr_nodes[0].GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity().GetSize() >= 4, "VR opacity not set"
    assert seg is not None and seg.IsA("vtkMRMLSegmentationNode"), "no segmentation node"
    segmentation = seg.GetSegmentation()
    colours = []
    for spec in segment_specs():
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment is not None, f"segment {spec.name!r} missing"
        assert segment.GetName() == spec.name, f"segment name {segment.GetName()!r} != {spec.name!r}"
        assert segment.GetTerminology() == spec.terminology, f"terminology of {spec.name!r}: {segment.GetTerminology()!r}"
        colour = tuple(segment.GetColor())
        assert np.ptp(colour) > 0.2, f"segment {spec.name!r} colour {colour} is grey"
        colours.append(colour)
    assert len(set(colours)) == 3, "segment colours are not distinct"
    assert segmentation.ContainsRepresentation("Closed surface"), "no closed-surface representation"
    assert np.allclose(_reference_geometry_matrix(seg), ijk_to_ras(t1), atol=1e-6), "segmentation reference geometry is not T1's"
    assert table is not None and table.GetName().startswith(TABLE_NAME), "no tumour volumes table"
    if expected_labels is not None:
        voxel_ml = float(np.prod(t1.GetSpacing())) / 1000.0
        rows = table_rows(table)
        for region, _, labels in REGIONS:
            count = int(np.isin(expected_labels, labels).sum())
            assert rows[region][0] == count, f"{region}: {rows[region][0]} voxels in the table, {count} in the labels"
            assert abs(rows[region][1] - count * voxel_ml) < 1e-9, f"{region}: volume {rows[region][1]} mL"
    study = study_of(t1)
    for node in (fused, seg, table):
        assert study_of(node) == study, f"{node.GetName()} is not under the inputs' study"


def _reference_geometry_matrix(seg: Any) -> np.ndarray:
    import slicer
    import vtk

    image = slicer.vtkOrientedImageData()
    converter = slicer.vtkSegmentationConverter
    converter.DeserializeImageGeometry(seg.GetSegmentation().GetConversionParameter(converter.GetReferenceImageGeometryParameterName()), image)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@dataclass
class Scenario:
    """What :func:`run_scenario` made: inputs, outputs, the logic, the case folder and model file."""

    nodes: dict[str, Any]
    outputs: NSLFOutputs
    logic: NSLFLogicCore
    case_dir: Path
    model_path: Path


def run_scenario(logic: NSLFLogicCore, work_dir: str | Path, oblique: bool = True) -> Scenario:
    """The shared scenario: phantom on disk -> storage nodes -> study -> ``logic.process`` -> :func:`check_outputs`."""
    work_dir = Path(work_dir)
    case_dir = write_phantom(work_dir / "cases", oblique=oblique)
    model_path = write_random_model(work_dir / "model.pt")
    nodes = load_case_nodes(logic.context, case_dir)
    assert sorted(nodes) == sorted(MODALITIES), f"inputs assigned from names: {sorted(nodes)}"
    put_in_study(nodes)
    outputs = logic.process(**nodes, model=str(model_path), device="cpu")
    check_outputs(nodes, outputs, np.asarray(_labels_of(logic, outputs, nodes)))
    return Scenario(nodes, outputs, logic, case_dir, model_path)


def _labels_of(logic: NSLFLogicCore, outputs: NSLFOutputs, nodes: dict[str, Any]) -> np.ndarray:
    from .segmentation import labels_from_segmentation

    return labels_from_segmentation(outputs.segmentation, nodes["t1"], logic.context.segmentations)
