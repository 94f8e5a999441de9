"""The one naming rule (:func:`nslfcore.data.modality_names.modality_of`) and the one-way imports of the data layer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nslfcore.data.brats import file_role
from nslfcore.data.modality_names import modality_of

#: name -> role; one row per spelling the engine's file matcher or the Slicer module's node assignment accepts.
NAMES: dict[str, str | None] = {
    # BraTS 2021 files and the nodes Slicer names after them
    "BraTS2021_00001_t1.nii.gz": "t1", "BraTS2021_00001_t1ce.nii.gz": "t1ce", "BraTS2021_00001_t2.nii.gz": "t2",
    "BraTS2021_00001_flair.nii.gz": "flair", "BraTS2021_00001_seg.nii.gz": "seg", "BraTS2021_00012_t1": "t1",
    # BraTS 2023+
    "BraTS-GLI-00001-000-t1n.nii.gz": "t1", "BraTS-GLI-00001-000-t1c.nii.gz": "t1ce", "BraTS-GLI-00001-000-t2w": "t2",
    "BraTS-GLI-00001-000-t2f.nii.gz": "flair", "BraTS-GLI-00001-000-seg.nii.gz": "seg",
    # T1 before T1ce: a prefix is not the modality
    "T1": "t1", "Case_T1": "t1", "x-t1n": "t1", "MPRAGE_T1w": "t1", "T1_MPRAGE": "t1", "3DT1": "t1", "T1_2mm": "t1",
    "T1cor": "t1", "T1map": "t1",
    # T1ce spellings, glued or separated
    "T1ce": "t1ce", "T1CE": "t1ce", "t1c": "t1ce", "T1Gd": "t1ce", "sub01_t1gd.nii": "t1ce", "T1post": "t1ce",
    "T1_post": "t1ce", "T1 post contrast": "t1ce", "T1-ce": "t1ce", "T1 ce": "t1ce", "T1_gd": "t1ce", "T1-c": "t1ce",
    "x-t1c": "t1ce", "patient_T1CE_reg.nrrd": "t1ce", "t1ce2": "t1ce",
    # T2 and FLAIR (t2f and t2flair are FLAIR; T2FSE is T2)
    "T2": "t2", "T2w": "t2", "x-t2w": "t2", "T2.mha": "t2", "T2_w": "t2", "t2star": "t2", "AX T2 FSE": "t2",
    "T2FSE": "t2", "FLAIR": "flair", "AX_FLAIR": "flair", "x-t2f": "flair", "T2FLAIR": "flair", "T2-FLAIR": "flair",
    "x_t2flair.mha": "flair", "t1_flair": "flair",
    # segmentations
    "seg": "seg", "label": "seg", "labels": "seg", "tumour_labels": "seg", "segmentation": "seg", "t1_seg": "seg",
    # nothing (a digit after t1/t2 is another name)
    "notes": None, "dwi": None, "adc": None, "t12": None, "": None,
    # two modality words: the last one counts, as in both BraTS layouts
    "flair_t1": "t1", "t1ce_t2": "t2",
}  # fmt: skip


@pytest.mark.parametrize("name, role", NAMES.items())
def test_modality_of(name, role):
    assert modality_of(name) == role
    assert modality_of(name.upper()) == role and modality_of(name.lower()) == role


@pytest.mark.parametrize(
    "file_name, case, role",
    [
        ("BraTS2021_00001_t1.nii.gz", "BraTS2021_00001", "t1"), ("T1patient_image.nii", "T1patient", None),
        ("seg_study-t2w.nrrd", "seg_study", "t2"), ("notes.txt", "", None), ("t1.txt", "", None), ("T1.NII.GZ", "", "t1"),
        ("BraTS2021_00001_t1ce.nii.gz", "", "t1ce"), ("x_t1.nhdr", "", "t1"),
    ],
)  # fmt: skip
def test_file_role_needs_an_image_suffix_and_skips_the_case_name(file_name, case, role):
    assert file_role(file_name, case) == role


def _fresh_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_the_naming_rule_imports_the_standard_library_only():
    """The Slicer module imports it before torch is installed."""
    loaded = _fresh_import("nslfcore.data.modality_names")
    assert not {"torch", "numpy", "SimpleITK", "monai"} & {name.split(".")[0] for name in loaded}


def test_validation_does_not_import_the_reader():
    """brats -> validation -> discovery, never back."""
    loaded = _fresh_import("nslfcore.data.validation")
    assert "nslfcore.data.discovery" in loaded and "nslfcore.data.brats" not in loaded
