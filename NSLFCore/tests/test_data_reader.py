"""Reading BraTS 2021, BraTS 2023+ and plain-folder layouts; label mappings; splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nslfcore import MODALITIES
from nslfcore.data.brats import file_role, find_cases, load_case, read_split_lists, seeded_split, select_cases
from nslfcore.data.io import write_image
from nslfcore.data.labels import (
    brats2021_to_internal, internal_to_brats2021, internal_to_brats2023, region_mask, to_internal,
)  # fmt: skip
from nslfcore.data.phantom import generate_tiny_case, write_case

SIZE = (24, 28, 32)  # (z, y, x)
BRATS2023_NAMES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


@pytest.fixture(scope="module")
def tiny_cases():
    return [generate_tiny_case(seed=3, size=SIZE, index=i) for i in range(2)]


def write_brats2023(case, root: Path) -> Path:
    folder = root / case.name.replace("BraTS2021_", "BraTS-GLI-") / ""
    name = folder.name
    for modality in MODALITIES:
        write_image(case.images[modality], case.geometry, folder / f"{name}-{BRATS2023_NAMES[modality]}.nii.gz", np.int16)
    write_image(internal_to_brats2023(case.label), case.geometry, folder / f"{name}-seg.nii.gz", np.uint8)
    return folder


def test_label_mappings_round_trip():
    internal = np.array([0, 1, 2, 3], np.uint8)
    assert internal_to_brats2021(internal).tolist() == [0, 1, 2, 4]
    assert brats2021_to_internal(np.array([0, 1, 2, 4])).tolist() == [0, 1, 2, 3]
    assert to_internal(np.array([0, 1, 2, 3]), "brats2023").tolist() == [0, 1, 2, 3]
    assert to_internal(np.array([0, 4, 2]), "auto").tolist() == [0, 3, 2]
    assert region_mask(internal, "TC").tolist() == [False, True, False, True]
    assert region_mask(internal, "WT").tolist() == [False, True, True, True]
    assert region_mask(internal, "ET").tolist() == [False, False, False, True]


@pytest.mark.parametrize(
    "name, role",
    [
        ("BraTS2021_00001_t1ce.nii.gz", "t1ce"), ("BraTS2021_00001_t1.nii.gz", "t1"),
        ("BraTS2021_00001_flair.nii.gz", "flair"), ("BraTS2021_00001_t2.nii.gz", "t2"),
        ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"), ("BraTS-GLI-00001-000-t1c.nii.gz", "t1ce"),
        ("BraTS-GLI-00001-000-t1n.nii.gz", "t1"), ("BraTS-GLI-00001-000-t2w.nii.gz", "t2"),
        ("BraTS-GLI-00001-000-seg.nii.gz", "seg"), ("patient_T1CE_reg.nrrd", "t1ce"), ("T2.mha", "t2"),
        ("sub01_t1gd.nii", "t1ce"), ("notes.txt", None), ("x_t2flair.mha", "flair"),
    ],
)  # fmt: skip
def test_file_role(name, role):
    assert file_role(name) == role


def test_brats2021_layout(tmp_path, tiny_cases):
    for case in tiny_cases:
        write_case(case, tmp_path)
    found = find_cases(tmp_path)
    assert [c.name for c in found] == [c.name for c in tiny_cases]
    assert all(c.label_convention == "brats2021" and not c.missing for c in found)
    loaded = load_case(found[0], require_label=True)
    original = tiny_cases[0]
    assert loaded.geometry == original.geometry
    assert loaded.geometry.origin == (0.0, -(SIZE[1] - 1.0), 0.0)
    assert set(np.unique(loaded.label)) == set(np.unique(original.label))  # 4 -> 3 on reading
    np.testing.assert_array_equal(loaded.label, original.label)
    for m in MODALITIES:
        assert loaded.images[m].dtype == np.float32 and loaded.images[m].shape == SIZE
        np.testing.assert_allclose(loaded.images[m], np.rint(original.images[m]), atol=0.5)
    assert loaded.stacked().shape == (4, *SIZE)


def test_brats2023_layout(tmp_path, tiny_cases):
    write_brats2023(tiny_cases[0], tmp_path)
    (found,) = find_cases(tmp_path)
    assert found.name == "BraTS-GLI-00000" and found.label_convention == "brats2023"
    assert {m: p.name.split("-")[-1] for m, p in found.images.items()} == {
        m: f"{BRATS2023_NAMES[m]}.nii.gz" for m in MODALITIES
    }
    loaded = load_case(found, require_label=True)
    np.testing.assert_array_equal(loaded.label, tiny_cases[0].label)  # ET stays 3


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha"])
def test_plain_folder(tmp_path, tiny_cases, suffix):
    case = tiny_cases[1]
    names = {"t1": "T1_pre", "t1ce": "t1c_post", "t2": "scan_T2w", "flair": "FLAIR"}
    for m in MODALITIES:
        write_image(case.images[m], case.geometry, tmp_path / f"{names[m]}{suffix}", np.float32)
    write_image(internal_to_brats2021(case.label), case.geometry, tmp_path / f"labels{suffix}", np.uint8)
    (found,) = find_cases(tmp_path)
    assert found.name == tmp_path.name and not found.missing and found.label_convention == "auto"
    loaded = load_case(found)
    np.testing.assert_array_equal(loaded.label, case.label)
    np.testing.assert_allclose(loaded.images["t1ce"], case.images["t1ce"], rtol=1e-6)


def test_split_lists(tmp_path):
    (tmp_path / "train.txt").write_text("BraTS2021_00000\n\nBraTS2021_00001  # comment\n")
    (tmp_path / "valid.txt").write_text("data/BraTS2021_00002/\n")
    (tmp_path / "test.txt").write_text("BraTS2021_00003.nii.gz\n")
    split = read_split_lists(tmp_path)
    assert split == {
        "train": ["BraTS2021_00000", "BraTS2021_00001"], "valid": ["BraTS2021_00002"], "test": ["BraTS2021_00003"],
    }  # fmt: skip
    with pytest.raises(FileNotFoundError, match="train.txt"):
        read_split_lists(tmp_path / "nothing")


def test_seeded_split_is_reproducible_and_disjoint():
    names = [f"case{i:03d}" for i in range(100)]
    a = seeded_split(names, (0.8, 0.1, 0.1), seed=5)
    assert a == seeded_split(list(reversed(names)), (0.8, 0.1, 0.1), seed=5)
    assert a != seeded_split(names, (0.8, 0.1, 0.1), seed=6)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [80, 10, 10]
    assert sorted(a["train"] + a["valid"] + a["test"]) == names


def test_select_cases_names_missing_case(tmp_path, tiny_cases):
    write_case(tiny_cases[0], tmp_path)
    found = find_cases(tmp_path)
    assert [c.name for c in select_cases(found, ["BraTS2021_00000"])] == ["BraTS2021_00000"]
    with pytest.raises(ValueError, match="BraTS2021_09999"):
        select_cases(found, ["BraTS2021_09999"])
