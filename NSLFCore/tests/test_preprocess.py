"""nslfcore.preprocess: orientation to LPS, rigid registration by mutual information, co-registration."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nslfcore.data.phantom import generate_tiny_case
from nslfcore.preprocess import RegistrationError, coregister, register_rigid, resample_like, to_lps

SIZE = (48, 48, 48)


def _random_image(direction: np.ndarray) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.random((7, 6, 5)).astype(np.float32))  # (z, y, x): size (5, 6, 7)
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection([float(v) for v in direction.ravel()])
    return image


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


PERMUTED_FLIPPED = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # i -> -y, j -> +z, k -> -x


@pytest.mark.parametrize(
    "direction",
    [PERMUTED_FLIPPED, PERMUTED_FLIPPED @ _rotation(0, 10.0) @ _rotation(2, -7.0)],
    ids=["permuted-flipped", "oblique"],
)
def test_to_lps_keeps_every_voxel_in_place(direction: np.ndarray) -> None:
    image = _random_image(direction)
    out = to_lps(image)
    new_direction = np.asarray(out.GetDirection()).reshape(3, 3)
    # each index axis runs closest to +x (left), +y (posterior), +z (superior) respectively
    assert np.all(np.argmax(np.abs(new_direction), axis=0) == [0, 1, 2])
    assert np.all(np.diag(new_direction) > 0)
    if np.allclose(np.abs(direction), np.round(np.abs(direction))):
        np.testing.assert_allclose(new_direction, np.eye(3), atol=1e-12)
    assert sorted(out.GetSpacing()) == sorted(image.GetSpacing())
    for index in [(0, 0, 0), (4, 5, 6), (1, 2, 3), (4, 0, 6), (2, 5, 0)]:
        point = image.TransformIndexToPhysicalPoint(index)
        new_index = out.TransformPhysicalPointToIndex(point)
        np.testing.assert_allclose(out.TransformIndexToPhysicalPoint(new_index), point, atol=1e-6)
        assert out[new_index] == image[index]


def test_to_lps_of_an_lps_image_is_unchanged() -> None:
    image = _random_image(np.eye(3))
    out = to_lps(image)
    assert out.GetOrigin() == image.GetOrigin() and out.GetDirection() == image.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(image))


@pytest.fixture(scope="module")
def phantom() -> dict[str, sitk.Image]:
    case = generate_tiny_case(0, size=SIZE)
    return {name: case.geometry.to_image(array) for name, array in case.images.items()}


def _known_motion(reference: sitk.Image) -> sitk.Euler3DTransform:
    """5 degrees about z (about the image centre) and a 6 mm shift: a head that moved between sequences."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(reference.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in reference.GetSize()]))
    motion.SetRotation(0.0, 0.0, np.radians(5.0))
    motion.SetTranslation((6.0, -2.0, 1.0))
    return motion


def _brain_points(image: sitk.Image) -> list[tuple[float, ...]]:
    """Voxel centres (LPS mm) spread over the brain: its extremes along each axis and its centre."""
    zyx = np.argwhere(sitk.GetArrayFromImage(image) > 0)
    picks = [zyx[np.argmin(zyx[:, a])] for a in range(3)] + [zyx[np.argmax(zyx[:, a])] for a in range(3)]
    picks.append(np.round(zyx.mean(axis=0)).astype(int))
    return [image.TransformIndexToPhysicalPoint([int(p[2]), int(p[1]), int(p[0])]) for p in picks]


def test_register_rigid_recovers_a_known_motion_across_contrasts(phantom: dict[str, sitk.Image]) -> None:
    t1, flair = phantom["t1"], phantom["flair"]
    motion = _known_motion(t1)
    moved = resample_like(flair, t1, motion)  # moved(p) = flair(motion(p))
    result = register_rigid(t1, moved, name="flair")
    assert result.converged and result.metric < result.initial_metric and result.iterations > 0
    # result maps t1 points to moved points; moved points map to flair (= t1) points through motion
    for point in _brain_points(t1):
        landed = motion.TransformPoint(result.transform.TransformPoint(point))
        assert np.linalg.norm(np.subtract(landed, point)) < 1.5, point
    again = register_rigid(t1, moved, name="flair")
    # fixed seed: the same transform, up to the rounding of multi-threaded sums
    np.testing.assert_allclose(again.transform.GetParameters(), result.transform.GetParameters(), atol=1e-6)


def test_register_rigid_refuses_noise_and_constant_images_naming_the_sequence(phantom: dict[str, sitk.Image]) -> None:
    t1 = phantom["t1"]
    noise = sitk.GetImageFromArray(np.random.default_rng(1).random(sitk.GetArrayFromImage(t1).shape).astype(np.float32))
    noise.CopyInformation(t1)
    with pytest.raises(RegistrationError, match="flair"):
        register_rigid(t1, noise, name="flair")
    constant = sitk.Image(t1) * 0 + 5.0
    with pytest.raises(RegistrationError, match="t2"):
        register_rigid(t1, constant, name="t2")


def test_coregister_puts_every_sequence_on_the_reference_grid(phantom: dict[str, sitk.Image]) -> None:
    reference = phantom["t1ce"]
    motion = _known_motion(reference)
    # a FLAIR that moved and was acquired on another grid (2 mm, shifted origin)
    origin = tuple(o + d for o, d in zip(reference.GetOrigin(), (1.0, -2.0, 1.5)))
    coarse = sitk.Resample(
        phantom["flair"],
        [24, 24, 24],
        motion,
        sitk.sitkLinear,
        origin,
        (2.0, 2.0, 2.0),
        reference.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    images = {"t1ce": reference, "t1": phantom["t1"], "flair": coarse}
    result = coregister(images, reference="t1ce")
    assert result.images["t1ce"] is reference
    assert set(result.transforms) == {"t1", "flair"}
    for name in ("t1", "flair"):
        out = result.images[name]
        assert out.GetSize() == reference.GetSize() and out.GetSpacing() == reference.GetSpacing()
        assert out.GetOrigin() == reference.GetOrigin() and out.GetDirection() == reference.GetDirection()
    # the moved, coarser FLAIR's transform brings the reference's brain points back where they were
    for point in _brain_points(reference):
        landed = motion.TransformPoint(result.transforms["flair"].TransformPoint(point))
        assert np.linalg.norm(np.subtract(landed, point)) < 1.5, point
