"""nslfcore.preprocess.atlas: the atlas grid, affine alignment of a T1ce to it, and the way back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nslfcore.data.labels import REGION_CHANNELS, regions_from_labels
from nslfcore.data.phantom import generate_case
from nslfcore.preprocess import RegistrationError, atlas_reference, from_atlas, register_to_atlas, resample_like, to_atlas

pytest.importorskip("scipy")  # the realistic phantom

SPACING_MM = 2.0


def _image(array: np.ndarray, geometry) -> sitk.Image:  # type: ignore[no-untyped-def]
    image = sitk.GetImageFromArray(array)  # (z, y, x) -> size (x, y, z)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection([float(v) for row in geometry.direction for v in row])
    return image


def _known_motion(centre: tuple[float, ...]) -> sitk.AffineTransform:
    """Native point -> phantom point: the inverse of moving the head by 8 degrees, x 1.08 and 10 mm."""
    axis = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    rotation = sitk.VersorTransform(tuple(axis), float(np.radians(8.0)))
    forward = np.asarray(rotation.GetMatrix()).reshape(3, 3) * 1.08  # phantom -> native
    motion = sitk.AffineTransform(3)
    motion.SetCenter(centre)
    motion.SetMatrix(tuple(np.linalg.inv(forward).ravel()))
    motion.SetTranslation((-6.0, 8.0, 0.0))  # |shift| = 10 mm
    return motion


@pytest.fixture(scope="module")
def exam() -> dict[str, sitk.Image]:
    """The seed-3 phantom as a "native exam": 2 mm, then moved by a known affine onto a larger 2 mm grid."""
    case = generate_case(seed=3)
    phantom = {name: _image(case.images[name], case.geometry) for name in ("t1ce",)}
    phantom["label"] = _image(case.label.astype(np.uint8), case.geometry)
    native = sitk.Image([136, 136, 96], sitk.sitkFloat32)
    native.SetSpacing([SPACING_MM] * 3)
    centre = phantom["t1ce"].TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in phantom["t1ce"].GetSize()])
    native.SetOrigin([c - SPACING_MM * (n - 1) / 2 for c, n in zip(centre, native.GetSize())])
    motion = _known_motion(centre)
    t1ce = sitk.SmoothingRecursiveGaussian(phantom["t1ce"], 0.85)  # 2 mm without aliasing
    return {
        "t1ce": resample_like(t1ce, native, motion, "linear"),
        "label": resample_like(phantom["label"], native, motion, "nearest"),
    }


def test_atlas_reference_is_the_phantoms_grid_with_the_template_brain() -> None:
    atlas = atlas_reference()
    assert atlas.GetSize() == (240, 240, 155)
    assert atlas.GetSpacing() == (1.0, 1.0, 1.0)
    assert atlas.GetOrigin() == (0.0, -239.0, 0.0)
    assert atlas.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    brain = sitk.GetArrayFromImage(atlas) > 0  # (z, y, x)
    top = int(np.flatnonzero(brain.any(axis=(1, 2)))[-1])
    assert 148 <= top <= 150  # 5 mm below the top slice (154), as the phantoms place it
    assert 1.0e6 < brain.sum() < 1.6e6  # a 0.93-scaled template brain, mm^3
    atlas.SetOrigin((1.0, 2.0, 3.0))
    assert atlas_reference().GetOrigin() == (0.0, -239.0, 0.0)  # a copy each call


def test_to_atlas_and_back_recovers_the_native_labels(exam: dict[str, sitk.Image]) -> None:
    alignment = register_to_atlas(exam["t1ce"], seed=3)
    assert all(0.9 < s < 1.3 for s in alignment.scales)
    label = sitk.GetArrayFromImage(exam["label"])
    one_hot = {str(c): sitk.Cast(exam["label"] == c, sitk.sitkFloat32) for c in range(4)}
    moved = to_atlas({**one_hot, "t1ce": exam["t1ce"]}, alignment)
    assert moved["t1ce"].GetSize() == (240, 240, 155)
    # the registration itself: the exam's brain lands on the atlas brain
    atlas_brain = sitk.GetArrayFromImage(alignment.reference) > 0
    exam_brain = sitk.GetArrayFromImage(moved["t1ce"]) > 0.05 * float(sitk.GetArrayFromImage(exam["t1ce"]).max())
    brain_dice = 2.0 * np.logical_and(atlas_brain, exam_brain).sum() / (atlas_brain.sum() + exam_brain.sum())
    assert brain_dice > 0.9, f"brain Dice {brain_dice:.3f} in atlas space"
    probabilities = np.stack([sitk.GetArrayFromImage(moved[str(c)]) for c in range(4)])
    atlas_labels = sitk.GetImageFromArray(np.argmax(probabilities, axis=0).astype(np.uint8))
    atlas_labels.CopyInformation(alignment.reference)
    back, fused = from_atlas(atlas_labels, moved["t1ce"], alignment, exam["t1ce"])
    assert fused is not None
    for image in (back, fused):
        assert image.GetSize() == exam["t1ce"].GetSize() and image.GetOrigin() == exam["t1ce"].GetOrigin()
    recovered = sitk.GetArrayFromImage(back)
    truth, found = regions_from_labels(label), regions_from_labels(recovered)
    for region, t, f in zip(REGION_CHANNELS, truth, found):
        dice = 2.0 * np.logical_and(t, f).sum() / (t.sum() + f.sum())
        assert dice > 0.9, f"{region}: Dice {dice:.3f}"
    brain = sitk.GetArrayFromImage(exam["t1ce"]) > 0
    correlation = np.corrcoef(sitk.GetArrayFromImage(fused)[brain], sitk.GetArrayFromImage(exam["t1ce"])[brain])[0, 1]
    assert correlation > 0.9


def test_register_to_atlas_refuses_noise_in_one_sentence(exam: dict[str, sitk.Image]) -> None:
    noise = sitk.GetImageFromArray(np.random.default_rng(1).random(sitk.GetArrayFromImage(exam["t1ce"]).shape).astype(np.float32))
    noise.CopyInformation(exam["t1ce"])
    with pytest.raises(RegistrationError, match=r"^Aligning noise\.nii\.gz to the atlas [^\n]*\.$"):
        register_to_atlas(noise, seed=3, iterations=50, name="noise.nii.gz")
