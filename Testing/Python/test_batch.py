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


def _batch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--device", "cpu", "--no-render"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("fault, message", [("truncated", "cannot read"), ("nan", "NaN or infinite voxels")])
def test_batch_refuses_inputs_slicers_readers_would_accept(fault, message, scenario, tmp_path):
    """ITK zero-fills a truncated .nii.gz and reads NaN as 0: the engine's checks run first."""
    case = shutil.copytree(scenario.case_dir, tmp_path / scenario.case_dir.name)
    t2 = next(case.glob("*_t2.nii.gz"))
    if fault == "truncated":
        data = t2.read_bytes()
        t2.write_bytes(data[: len(data) * 2 // 3])
    else:
        from nslfcore.data.io import read_image, write_image

        array, geometry = read_image(t2)
        array = array.astype(np.float32)
        array.flat[array.size // 2] = np.nan
        write_image(array, geometry, t2, np.float32)
    out = tmp_path / "out"
    proc = _batch("--case", str(case), "--out", str(out), "--model", str(scenario.model_path))
    assert proc.returncode == 1 and message in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_batch_on_a_missing_folder_is_one_sentence(tmp_path):
    proc = _batch("--cases", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_batch_into_a_locked_folder_is_refused_and_changes_nothing(scenario, tmp_path):
    from nslfcore.data.output import OutputLock

    out = tmp_path / "out"
    out.mkdir()
    (out / "fused.nii.gz").write_bytes(b"previous result")
    with OutputLock(out, "NSLF batch run"):
        proc = _batch("--case", str(scenario.case_dir), "--out", str(out), "--model", str(scenario.model_path),
                      "--overwrite")  # fmt: skip
    assert proc.returncode == 1 and "is being written by another NSLF batch run" in proc.stdout, proc.stdout
    assert (out / "fused.nii.gz").read_bytes() == b"previous result"
    assert sorted(p.name for p in out.iterdir()) == ["fused.nii.gz"]  # no staging folder, no lock left
