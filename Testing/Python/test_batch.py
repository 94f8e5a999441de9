"""The batch script in plain Python (slicer-core): every output file, segmentation reload, skipped bad cases, render.png."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import slicer
from NSLFSlicerLib.app_setup import create_standalone_context
from NSLFSlicerLib.mrml_io import array_view, load_volume
from NSLFSlicerLib.rendering import is_blank
from NSLFSlicerLib.segmentation import labels_from_segmentation

SCRIPT = Path(__file__).resolve().parents[2] / "NSLFSlicer" / "Scripts" / "nslf_batch.py"
FILES = ("fused.nii.gz", "segmentation.seg.nrrd", "labels.nii.gz", "tumor_volumes.csv", "scene.mrb", "render.png")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, scenario):
    root = tmp_path_factory.mktemp("batch")
    cases = root / "cases"
    shutil.copytree(scenario.case_dir, cases / scenario.case_dir.name)
    (cases / "broken_case").mkdir()
    (cases / "broken_case" / "broken_case_t1.nii.gz").write_bytes(b"not an image")
    out = root / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cases", str(cases), "--out", str(out), "--model", str(scenario.model_path), "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return proc, out / scenario.case_dir.name, scenario


def test_batch_writes_every_file_and_reports_skipped_case(batch):
    proc, out, _ = batch
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one case failed on purpose
    assert "1 of 2 case(s) processed." in proc.stdout and "skipped broken_case" in proc.stdout
    for name in FILES[:-1]:
        assert (out / name).stat().st_size > 0, name
    assert "Region,Description,Labels,Voxels,Volume [mL]" in (out / "tumor_volumes.csv").read_text().splitlines()[0].replace('"', "")


def test_saved_segmentation_reloads_with_same_voxels(batch):
    _, out, scenario = batch
    ctx = create_standalone_context()
    t1 = load_volume(ctx.volumes, next(scenario.case_dir.glob("*_t1.nii.gz")))
    seg = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(out / "segmentation.seg.nrrd"))
    assert storage.ReadData(seg)
    saved = labels_from_segmentation(seg, t1, ctx.segmentations)
    fused = load_volume(ctx.volumes, out / "fused.nii.gz")
    assert np.allclose(slicer_matrix(fused), slicer_matrix(t1), atol=1e-4)
    assert scene_opens(out / "scene.mrb", out.parent / "unpacked")
    assert saved.any() and set(np.unique(saved)) <= {0, 1, 2, 4}
    from NSLFSlicerLib.testing import _labels_of  # same voxels as the in-memory run on the same inputs

    assert np.array_equal(saved, _labels_of(scenario.logic, scenario.outputs, scenario.nodes))
    label_file = load_volume(ctx.volumes, out / "labels.nii.gz", labelmap=True)
    assert np.allclose(slicer_matrix(label_file), slicer_matrix(t1), atol=1e-4)
    assert np.array_equal(np.asarray(array_view(label_file)), saved)


def test_existing_results_are_not_overwritten_without_asking(batch):
    proc, out, scenario = batch
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    args = [sys.executable, str(SCRIPT), "--case", str(scenario.case_dir), "--out", str(out), "--model",
            str(scenario.model_path), "--device", "cpu", "--no-render"]  # fmt: skip
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "already holds results" in refused.stdout and "--overwrite" in refused.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def scene_opens(mrb: Path, folder: Path) -> bool:
    """Unpack the bundle and load its .mrml (``ReadFromMRB`` needs Slicer's data I/O manager): every node, data included."""
    with zipfile.ZipFile(mrb) as archive:
        archive.extractall(folder)
    scene = create_standalone_context().scene
    scene.SetURL(str(next(folder.rglob("*.mrml"))))
    connected = scene.Connect()
    segs = scene.GetNodesByClass("vtkMRMLSegmentationNode")
    return bool(connected) and segs.GetNumberOfItems() == 1 and segs.GetItemAsObject(0).GetSegmentation().GetNumberOfSegments() == 3 and (
        scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode").GetNumberOfItems() == 1
    )


def slicer_matrix(node):
    from NSLFSlicerLib.mrml_io import ijk_to_ras

    return ijk_to_ras(node)


def test_render_png_is_not_blank(batch):
    proc, out, _ = batch
    png = out / "render.png"
    if not png.exists() and "No OpenGL back-end could render" in proc.stdout:
        pytest.skip("no OpenGL library works offscreen here: " + proc.stdout.split("No OpenGL back-end could render")[1][:300])
    assert not is_blank(png)


assert slicer  # slicer-core is required by this module
