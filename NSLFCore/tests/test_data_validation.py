"""Every validation failure gives a one-line message naming the case and file; folder reports; ``nslf check-data``."""

from __future__ import annotations

import sys

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nslfcore.cli import main
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.validation import DataValidationError, check_folder, validate_case
from nslfcore.data.phantom import generate_tiny_case, write_case

CASE = "BraTS2021_00000"
SIZE = (20, 24, 22)  # (z, y, x)


@pytest.fixture(scope="module")
def template_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    write_case(generate_tiny_case(seed=11, size=SIZE, index=0), root)
    return root


@pytest.fixture
def case_dir(template_dir, tmp_path) -> Path:
    shutil.copytree(template_dir / CASE, tmp_path / CASE)
    return tmp_path / CASE


def _path(folder: Path, role: str) -> Path:
    return folder / f"{CASE}_{role}.nii.gz"


def _rewrite(folder: Path, role: str, edit) -> None:
    image = sitk.ReadImage(str(_path(folder, role)))
    result = edit(image)
    sitk.WriteImage(result, str(_path(folder, role)))


def _with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _nan(image):
    a = sitk.GetArrayFromImage(image).astype(np.float32)
    a[3, 4, 5] = np.nan
    a[3, 4, 6] = np.inf
    return _with_array(image, a)


def _seg_value(value):
    def edit(image):
        a = sitk.GetArrayFromImage(image)
        a[0, 0, 0] = value
        return _with_array(image, a)

    return edit


def _set(attribute, value):
    def edit(image):
        getattr(image, f"Set{attribute}")(value)
        return image

    return edit


def _resized(image):
    a = sitk.GetArrayFromImage(image)[:, :, :-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(a))
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.GetOrigin())
    return out


ROTATED = (np.cos(0.1), -np.sin(0.1), 0.0, np.sin(0.1), np.cos(0.1), 0.0, 0.0, 0.0, 1.0)
CASES = {
    "missing modality": (lambda f: _path(f, "flair").unlink(), "no flair file"),
    "missing label": (lambda f: _path(f, "seg").unlink(), "no segmentation"),
    "corrupt file": (lambda f: _path(f, "t2").write_bytes(b"\x1f\x8b garbage" * 10), "cannot read"),
    "truncated file": (lambda f: _path(f, "t1").write_bytes(_path(f, "t1").read_bytes()[:200]), "cannot read"),
    "not 3-D": (lambda f: sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(_path(f, "t1ce"))), "not a 3-D"),
    "4-D": (lambda f: sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkInt16), str(_path(f, "t1ce"))), "not a 3-D"),
    "size": (lambda f: _rewrite(f, "t1ce", _resized), "has size"),
    "spacing": (lambda f: _rewrite(f, "t2", _set("Spacing", (1.0, 1.0, 1.01))), "has spacing"),
    "origin": (lambda f: _rewrite(f, "flair", _set("Origin", (0.0, -23.0, 0.5))), "has origin"),
    "direction": (lambda f: _rewrite(f, "t1", _set("Direction", ROTATED)), "has direction"),
    "label geometry": (lambda f: _rewrite(f, "seg", _set("Spacing", (1.0, 1.2, 1.0))), "has spacing"),
    "label value 3 in 2021": (lambda f: _rewrite(f, "seg", _seg_value(3)), "label values {3}"),
    "label value 7": (lambda f: _rewrite(f, "seg", _seg_value(7)), "label values {7}"),
    "all zero": (lambda f: _rewrite(f, "t2", lambda im: _with_array(im, np.zeros(SIZE, np.int16))), "all zero"),
    "nan": (lambda f: _rewrite(f, "flair", _nan), "2 NaN or infinite"),
}


@pytest.mark.parametrize("problem", sorted(CASES))
def test_each_problem_raises_one_line_naming_case_and_file(case_dir, problem):
    damage, expected = CASES[problem]
    damage(case_dir)
    (files,) = find_cases(case_dir.parent)
    with pytest.raises(DataValidationError) as info:
        validate_case(files, require_label=True)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert len(info.value.problems) == 1, message
    assert "\n" not in message and message.startswith(f"{CASE}: ")
    assert expected in message
    if problem not in ("missing modality", "missing label"):
        assert f"{CASE}_" in message  # names the file
    with pytest.raises(DataValidationError):
        load_case(files, require_label=True)


def test_within_tolerance_is_accepted(case_dir):
    _rewrite(case_dir, "t2", _set("Spacing", (1.0, 1.0, 1.0 + 5e-4)))
    _rewrite(case_dir, "t1", _set("Origin", (5e-4, -23.0, 0.0)))
    (files,) = find_cases(case_dir.parent)
    validate_case(files)
    assert load_case(files).label is not None


def test_two_files_for_one_modality_is_rejected(case_dir):
    shutil.copy(_path(case_dir, "t1"), case_dir / f"{CASE}_t1_copy.nii.gz")
    (files,) = find_cases(case_dir.parent)
    with pytest.raises(DataValidationError, match="several files look like t1"):
        validate_case(files)


def _folder_with_three_kinds(template_dir: Path, root: Path) -> None:
    for name in ("BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"):
        shutil.copytree(template_dir / CASE, root / name)
        for f in (root / name).iterdir():
            f.rename(f.with_name(f.name.replace(CASE, name)))
    (root / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()
    (root / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz").write_bytes(b"not an image")


def test_check_folder_report(template_dir, tmp_path):
    _folder_with_three_kinds(template_dir, tmp_path)
    report = check_folder(tmp_path)
    assert report.names("complete") == ["BraTS2021_00000"]
    assert report.names("incomplete") == ["BraTS2021_00001"]
    assert report.names("rejected") == ["BraTS2021_00002"]
    table = report.table()
    assert "1 complete, 1 incomplete, 1 rejected" in table
    assert "BraTS2021_00001: no t2 file found" in table
    assert "BraTS2021_00002_flair.nii.gz" in table


def test_check_data_command(template_dir, tmp_path, capsys):
    _folder_with_three_kinds(template_dir, tmp_path)
    assert main(["check-data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BraTS2021_00000  complete" in out and "rejected" in out
    shutil.rmtree(tmp_path / "BraTS2021_00000")
    assert main(["check-data", str(tmp_path)]) == 1
    assert "no usable case" in capsys.readouterr().out
    assert main(["check-data", str(tmp_path / "absent")]) == 1


@pytest.mark.parametrize("nibabel", ["installed", "missing"])
def test_a_file_truncated_mid_stream_is_caught_with_or_without_nibabel(case_dir, monkeypatch, nibabel):
    """SimpleITK reads a half-written .nii.gz without complaint; the raw check must catch it even where nibabel
    is not installed yet (3D Slicer before the module's dependency step)."""
    if nibabel == "missing":
        monkeypatch.setitem(sys.modules, "nibabel", None)  # `import nibabel` raises ImportError
    path = _path(case_dir, "t2")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    (files,) = find_cases(case_dir.parent)
    with pytest.raises(DataValidationError) as info:
        validate_case(files, require_label=True)
    assert "cannot read" in str(info.value) and f"{CASE}_t2" in str(info.value)
