"""Input checks (each names the node and leaves the scene unchanged) and input assignment from names."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from NSLFSlicerLib.assign import modality_of
from NSLFSlicerLib.checks import InputError
from NSLFSlicerLib.logic import case_name
from NSLFSlicerLib.mrml_io import image_data_from_array, set_volume
from NSLFSlicerLib.testing import load_case_nodes


@pytest.fixture
def inputs(logic, case_dir):
    return load_case_nodes(logic.context, case_dir)


def _refused(logic, nodes, *phrases, **options):
    count = logic.scene.GetNumberOfNodes()
    with pytest.raises(InputError) as error:
        logic.process(**nodes, model=None, device="cpu", **options)
    for phrase in phrases:
        assert phrase in str(error.value)
    assert logic.scene.GetNumberOfNodes() == count
    return str(error.value)


def _copy(logic, node, name, array=None):
    out = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    set_volume(out, np.array(array if array is not None else 1.0, dtype=np.float32) * np.ones((8, 8, 8), np.float32), node)
    return out


def test_missing_modality(logic, inputs):
    """One empty input is allowed (test_three_inputs.py); two are refused, naming both."""
    _refused(logic, {**inputs, "t1ce": None, "flair": None}, "No T1ce and FLAIR volume was given", "at least 3")


def test_non_scalar_volume(logic, inputs):
    vector = logic.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb volume")
    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 8)
    image.AllocateScalars(vtk.VTK_FLOAT, 3)
    vector.SetAndObserveImageData(image)
    _refused(logic, {**inputs, "t2": vector}, "'rgb volume'", "T2")
    many = _copy(logic, inputs["t1"], "three components")
    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 8)
    image.AllocateScalars(vtk.VTK_FLOAT, 3)
    many.SetAndObserveImageData(image)
    _refused(logic, {**inputs, "t2": many}, "'three components'", "3 components")
    label = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "a labelmap")
    _refused(logic, {**inputs, "t2": label}, "'a labelmap'", "not a scalar volume")


def test_not_3d(logic, inputs):
    flat = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "one slice")
    flat.SetAndObserveImageData(image_data_from_array(np.ones((1, 16, 16), np.float32)))
    _refused(logic, {**inputs, "t1ce": flat}, "'one slice'", "not 3-D")


def test_same_node_twice(logic, inputs):
    name = inputs["t2"].GetName()
    _refused(logic, {**inputs, "flair": inputs["t2"]}, f"'{name}' is given as both T2 and FLAIR")


def test_geometry_mismatch_refused_then_resampled(logic, inputs, model_path):
    moved = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shifted flair")
    moved.Copy(inputs["flair"])
    moved.SetName("shifted flair")
    moved.SetAndObserveImageData(inputs["flair"].GetImageData())
    origin = list(moved.GetOrigin())
    moved.SetOrigin(origin[0] + 3.0, origin[1], origin[2])
    _refused(logic, {**inputs, "flair": moved}, "'shifted flair'", "resampleToReference=True")
    out = logic.process(**{**inputs, "flair": moved}, model=str(model_path), device="cpu", resampleToReference=True, segment=False)
    assert out.fused.GetImageData().GetDimensions() == inputs["t1"].GetImageData().GetDimensions()


def test_empty_volume(logic, inputs):
    empty = _copy(logic, inputs["t1"], "all zero", 0.0)
    _refused(logic, {**inputs, "t2": empty}, "'all zero'", "empty")
    none = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no image")
    _refused(logic, {**inputs, "t2": none}, "'no image'", "no voxels")


def test_nan_and_inf(logic, inputs):
    values = np.ones((8, 8, 8), np.float32)
    values[2, 3, 4] = np.nan
    _refused(logic, {**inputs, "t1ce": _copy(logic, inputs["t1"], "has nan", values)}, "'has nan'", "NaN")
    values[2, 3, 4] = np.inf
    _refused(logic, {**inputs, "t1ce": _copy(logic, inputs["t1"], "has inf", values)}, "'has inf'", "infinite")


def test_assign_inputs_from_names(logic, inputs):
    assigned = logic.assignInputs()
    assert {k: v.GetID() for k, v in assigned.items()} == {k: v.GetID() for k, v in inputs.items()}
    expected = {"Case_t1": "t1", "Case_t1ce": "t1ce", "x-t1c": "t1ce", "x-t1n": "t1", "Case_flair": "flair",
                "x-t2f": "flair", "Case_t2": "t2", "x-t2w": "t2", "seg": "seg", "T1Gd": "t1ce"}  # fmt: skip
    assert {name: modality_of(name) for name in expected} == expected
    _copy(logic, inputs["t1"], "second_t1")
    with pytest.raises(InputError, match="look like the T1 volume"):
        logic.assignInputs()


def test_label_map_and_identical_images_are_refused(logic, inputs):
    """The engine's plausibility rules, naming the nodes: a label map as T1, two nodes with the same voxels."""
    from NSLFSlicerLib.mrml_io import array_view

    labels = array_view(inputs["t1"]).copy()
    labels[...] = 0
    labels[2:5, 2:5, 2:5] = 2
    labels[3, 3, 3] = 4
    def node_like(reference, name, array):
        out = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        set_volume(out, np.asarray(array, dtype=np.float32), reference)
        return out

    label_node = node_like(inputs["t1"], "tumour labels", labels)
    _refused(logic, {**inputs, "t1": label_node}, "'tumour labels' looks like a label map")
    twin = node_like(inputs["t2"], "t2 copy", array_view(inputs["t2"]).copy())
    _refused(logic, {**inputs, "flair": twin}, "'t2 copy' hold the same image")


@pytest.mark.parametrize(
    "t1_name, case",
    [("BraTS2021_00001_t1", "BraTS2021_00001"), ("BraTS-GLI-00001-000-t1n", "BraTS-GLI-00001-000"), ("Case T1w", "Case"),
     ("x_T1N", "x"), ("t1", "t1"), ("_t1", "_t1"), ("Case_3DT1", "Case_3DT1"), ("Case_t1ce", "Case_t1ce")],
)  # fmt: skip
def test_case_name_drops_a_last_t1_token_only(t1_name, case):
    assert case_name(t1_name) == case


def test_a_case_folder_with_two_t1_files_is_refused(logic, case_dir, tmp_path):
    import shutil

    folder = shutil.copytree(case_dir, tmp_path / case_dir.name)
    t1 = next(p for p in folder.iterdir() if modality_of(p.name) == "t1")
    shutil.copy(t1, folder / "T1w_copy.nii.gz")
    with pytest.raises(InputError, match="several files look like t1"):
        load_case_nodes(logic.context, folder)
