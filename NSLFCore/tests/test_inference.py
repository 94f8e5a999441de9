"""Whole-case inference: original geometry, label conventions, whole vs sliding window, progress, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nslfcore import MODALITIES
from nslfcore.config import PRESETS
from nslfcore.data.case import Case, Geometry
from nslfcore.data.io import read_image, write_image
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.data.validation import DataValidationError
from nslfcore.inference import estimate_memory_bytes, fuse, run, segment
from nslfcore.models import NSLF


@pytest.fixture(scope="module")
def model() -> NSLF:
    torch.manual_seed(0)
    return NSLF(PRESETS["compact"]).eval()


def _oblique(case: Case) -> Case:
    """The same voxels on an oblique (rotated), anisotropic grid."""
    m = sitk.VersorTransform((0.3, -0.2, 0.9), 0.4).GetMatrix()
    rotation = (tuple(m[0:3]), tuple(m[3:6]), tuple(m[6:9]))
    geometry = Geometry(size=case.geometry.size, spacing=(1.2, 0.9, 2.5), origin=(-31.0, 12.5, 7.0), direction=rotation)
    return Case(case.name, case.images, case.label, geometry, {})


def _write(case: Case, folder) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for modality in MODALITIES:
        paths[modality] = folder / f"{case.name}_{modality}.nii.gz"
        write_image(case.images[modality], case.geometry, paths[modality])
    return paths


def test_outputs_keep_the_oblique_anisotropic_input_geometry(model, tmp_path):
    case = _oblique(generate_tiny_case(seed=2, size=(40, 52, 44)))
    assert not np.allclose(np.asarray(case.geometry.direction, dtype=float).reshape(3, 3), np.eye(3))
    paths = _write(case, tmp_path / "in")
    result = run(paths, model, probabilities=True)
    _, read_geometry = read_image(paths["t1"])
    for array in (result.fused, result.labels):
        assert array.shape == case.geometry.shape  # (z, y, x)
    out = tmp_path / "seg.nii.gz"
    write_image(result.labels, result.geometry, out)
    image = sitk.ReadImage(str(out))
    reference = sitk.ReadImage(str(paths["t1"]))
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert result.geometry == read_geometry
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-4)
    assert result.fused.dtype == np.float32 and 0.0 <= result.fused.min() and result.fused.max() <= 1.0 + 1e-5


def _banded(model: NSLF) -> NSLF:
    """The model with a classifier that labels by fused intensity, so every class appears."""
    banded = NSLF(PRESETS["compact"]).eval()
    banded.load_state_dict(model.state_dict())
    with torch.no_grad():
        banded.fsd.classifier.weight.zero_()
        banded.fsd.classifier.weight[:, -1, 0, 0, 0] = torch.tensor([0.0, 10.0, 20.0, 30.0])  # the fused channel
        banded.fsd.classifier.bias.copy_(torch.tensor([0.0, -2.0, -7.0, -15.0]))
    return banded


@pytest.mark.parametrize(("convention", "allowed"), [("brats2021", {0, 1, 2, 4}), ("brats2023", {0, 1, 2, 3})])
def test_labels_only_in_the_allowed_set(model, convention, allowed):
    case = generate_tiny_case(seed=3)
    labels = segment(case, model, label_convention=convention).labels
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= allowed
    labels = segment(case, _banded(model), label_convention=convention).labels
    assert set(np.unique(labels).tolist()) == allowed  # every class, each with its file value


def test_conventions_differ_only_in_the_enhancing_tumour_value(model):
    case = generate_tiny_case(seed=3)
    banded = _banded(model)
    old = segment(case, banded, label_convention="brats2021").labels
    new = segment(case, banded, label_convention="brats2023").labels
    assert (old == 4).sum() > 0
    np.testing.assert_array_equal(old == 4, new == 3)
    np.testing.assert_array_equal(np.where(old == 4, 0, old), np.where(new == 3, 0, new))


def test_whole_volume_and_sliding_window_agree(model):
    case = generate_tiny_case(seed=1, size=(64, 96, 96))
    whole = run(case, model, mode="whole")
    sliding = run(case, model, mode="sliding", roi=(32, 48, 48), overlap=0.5)
    assert whole.mode == "whole" and sliding.mode == "sliding"
    a, b = whole.labels > 0, sliding.labels > 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice >= 0.99, dice
    assert np.abs(whole.fused - sliding.fused).max() < 0.01


def test_progress_is_reported_from_zero_to_one(model):
    seen: list[float] = []
    fuse(generate_tiny_case(seed=4), model, mode="sliding", roi=(32, 32, 32), progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 5


def test_memory_estimate_grows_with_volume_and_width(model):
    small = estimate_memory_bytes(model, (64, 64, 64))
    assert estimate_memory_bytes(model, (128, 128, 128)) == 8 * small
    assert estimate_memory_bytes(NSLF(PRESETS["paper"].replace(cunet_weights="shared")), (64, 64, 64)) > 3 * small


def test_bad_inputs_are_refused_with_one_clear_message(model, tmp_path):
    case = generate_tiny_case(seed=5)
    paths = _write(case, tmp_path / "ok")
    shifted = Geometry(case.geometry.size, case.geometry.spacing, (5.0, 0.0, 0.0), case.geometry.direction)
    write_image(case.images["t2"], shifted, paths["t2"])
    with pytest.raises(DataValidationError, match="t2"):
        run(paths, model)
    missing = dict(paths, flair=tmp_path / "nowhere_flair.nii.gz")
    with pytest.raises(DataValidationError, match="flair"):
        run(missing, model)
    with pytest.raises(ValueError, match="Missing input modalities"):
        run({"t1": paths["t1"]}, model)
    flat = tmp_path / "flat_t1.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.float32)), str(flat))
    with pytest.raises(DataValidationError, match="3-D"):
        run(dict(paths, t1=flat, t2=paths["t1"]), model)
