"""The logic against real MRML: nodes, geometry, segments, volume rendering, table, hierarchy, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from NSLFSlicerLib.logic import Cancelled
from NSLFSlicerLib.mrml_io import ijk_to_ras
from NSLFSlicerLib.segmentation import fill_segmentation, labels_from_segmentation
from NSLFSlicerLib.tables import table_rows
from NSLFSlicerLib.terminology import segment_specs
from NSLFSlicerLib.testing import check_outputs, load_case_nodes, reference_labels


def test_scenario_creates_expected_nodes(scenario):
    out = scenario.outputs
    assert out.fused.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert out.fused.GetName() == "BraTS2021_00000 NSLF fused"
    assert out.segmentation.GetClassName() == "vtkMRMLSegmentationNode"
    assert out.table.GetClassName() == "vtkMRMLTableNode" and out.table.GetName() == "NSLF tumor volumes"


def test_fused_geometry_equals_oblique_input(scenario):
    t1 = scenario.nodes["t1"]
    m = ijk_to_ras(t1)
    direction = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    assert not np.allclose(np.abs(direction), np.eye(3), atol=0.05), "the test input must be oblique"
    assert np.array_equal(ijk_to_ras(scenario.outputs.fused), m)


def test_segments_carry_tags_and_colours(scenario):
    segmentation = scenario.outputs.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Necrotic tumor core", "Peritumoral edema", "Enhancing tumor"]
    tags = [segmentation.GetNthSegment(i).GetTerminology() for i in range(3)]
    for tag, code in zip(tags, ("SCT^6574001^Necrosis", "SCT^79654002^Edema", "SCT^108369006^Neoplasm")):
        assert f"SCT^49755003^Morphologically Altered Structure~{code}~" in tag
        assert tag.endswith("SCT^12738006^Brain~^^")


def test_engine_figures_use_the_segments_colours():
    """``nslf compare``'s segmentation figure colours each class as the module's segments are."""
    from nslfcore.comparison_figures import CLASS_COLOURS
    from nslfcore.data.labels import brats2021_to_internal

    by_class = {int(brats2021_to_internal(np.array([spec.label]))[0]): spec.color for spec in segment_specs()}
    assert set(by_class) == set(CLASS_COLOURS)
    for index, rgb in by_class.items():
        assert np.allclose(np.asarray(CLASS_COLOURS[index]) / 255.0, rgb)


def test_volume_rendering_display_node(scenario):
    fused = scenario.outputs.fused
    vr = [fused.GetNthDisplayNode(i) for i in range(fused.GetNumberOfDisplayNodes())]
    vr = [d for d in vr if d.IsA("vtkMRMLVolumeRenderingDisplayNode")]
    assert len(vr) == 1 and vr[0].GetVisibility()
    opacity = vr[0].GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    assert opacity.GetValue(0.0) == 0.0, "background must be transparent"
    display = fused.GetScalarVolumeDisplayNode()
    assert not display.GetAutoWindowLevel() and 0 < display.GetWindow() <= 1.0


def test_table_equals_label_counts_times_voxel_volume(scenario):
    t1 = scenario.nodes["t1"]
    labels = labels_from_segmentation(scenario.outputs.segmentation, t1, scenario.logic.context.segmentations)
    voxel_ml = float(np.prod(t1.GetSpacing())) / 1000.0
    rows = table_rows(scenario.outputs.table)
    assert rows["WT"][0] == int((labels > 0).sum())
    assert rows["TC"][0] == int(np.isin(labels, (1, 4)).sum())
    assert rows["ET"][0] == int((labels == 4).sum())
    for voxels, ml in rows.values():
        assert ml == pytest.approx(voxels * voxel_ml, abs=1e-12)


def test_ground_truth_labels_round_trip_on_oblique_grid(scenario):
    """All three labels present: segmentation from labels and back gives the same voxels."""
    logic, t1 = scenario.logic, scenario.nodes["t1"]
    truth = reference_labels(scenario.case_dir)
    assert set(np.unique(truth)) == {0, 1, 2, 4}
    node = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    try:
        fill_segmentation(node, truth, t1)
        assert np.array_equal(labels_from_segmentation(node, t1, logic.context.segmentations), truth)
        colours = {tuple(node.GetSegmentation().GetSegment(s.segment_id).GetColor()) for s in segment_specs()}
        assert len(colours) == 3
    finally:
        logic.scene.RemoveNode(node)


def test_given_outputs_are_replaced_in_place(scenario):
    logic, out = scenario.logic, scenario.outputs
    count = logic.scene.GetNumberOfNodes()
    ids = {n.GetID() for n in (out.fused, out.segmentation, out.table)}
    again = logic.process(
        **scenario.nodes, outputVolume=out.fused, outputSegmentation=out.segmentation, outputTable=out.table,
        model=str(scenario.model_path), device="cpu",
    )  # fmt: skip
    assert {n.GetID() for n in (again.fused, again.segmentation, again.table)} == ids
    assert logic.scene.GetNumberOfNodes() == count
    check_outputs(scenario.nodes, again)


def test_cancel_leaves_scene_unchanged(scenario):
    logic = scenario.logic
    count, mtimes = logic.scene.GetNumberOfNodes(), {k: n.GetMTime() for k, n in scenario.nodes.items()}

    def cancel_during_inference(fraction, message):
        if fraction > 0.2:
            logic.requestCancel()

    with pytest.raises(Cancelled):
        logic.process(**scenario.nodes, model=str(scenario.model_path), device="cpu", progressCallback=cancel_during_inference)
    assert logic.scene.GetNumberOfNodes() == count
    assert {k: n.GetMTime() for k, n in scenario.nodes.items()} == mtimes


def test_fuse_and_segment_alone(logic, case_dir, model_path):
    nodes = load_case_nodes(logic.context, case_dir)
    fused = logic.fuse(**nodes, model=str(model_path), device="cpu")
    assert fused.IsA("vtkMRMLScalarVolumeNode")
    assert logic.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    seg = logic.segment(**nodes, model=str(model_path), device="cpu")
    assert seg.GetSegmentation().GetNumberOfSegments() == 3
