"""A raw-exam simulator: what a scanner gives for a phantom case (issue 32, point 4).

From a BraTS-like phantom (skull-stripped, four co-registered 1 mm sequences on the BraTS grid) it
makes what a clinical exam looks like before any preprocessing, so that ``nslf run --preprocess``
can be tested and benchmarked against a known truth:

* **a head around the brain**: the phantom is padded onto a larger 1 mm grid and wrapped in layers
  whose thickness varies smoothly over the head -- extra-axial CSF, the skull's inner table, the
  diploe (fatty marrow), the outer table, muscle, subcutaneous fat and skin -- plus a neck of soft
  tissue below the brain. Each layer's intensity per sequence is a typical multiple of the
  phantom's white matter (fat bright on T1, CSF bright on T2, cortical bone dark everywhere), drawn
  around that value per case. (The shipped MNI152 template is skull-stripped, so the head is
  modelled rather than taken from it.)
* **per sequence**: a random rigid misalignment of the head (also for the T1ce, which places the
  head anywhere in the scanner), a grid with its own orientation (axial, coronal or sagittal
  slices, tilted by a few degrees: oblique), in-plane spacing 0.45-1.0 mm, slices 3-6 mm thick
  (slice profile: a Gaussian of that full width at half maximum), its own matrix size and field of
  view, a smooth multiplicative bias field, Rician noise and scanner intensity units stored as
  int16.

The ground truth on the exam's native grid is the phantom's label map resampled (nearest
neighbour) onto the T1ce's native grid with the T1ce's pose: what a perfect pipeline would return.

Axis conventions: numpy arrays are ``(z, y, x)``; SimpleITK images are indexed ``(x, y, z)``; all
physical coordinates are LPS mm. Everything is drawn from ``np.random.default_rng((seed, index))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore import MODALITIES
from nslfcore.data.case import Case, Geometry
from nslfcore.data.labels import internal_to_brats2021
from nslfcore.data.phantom import case_name, make_phantom, refuse_taken_names
from nslfcore.data.phantom_fields import smooth_noise

HEAD_MARGIN_MM = (30, 30, 30)
"""Padding (x, y, z) mm added on each side of the BraTS grid so that the head fits (more below: the neck)."""

NECK_MARGIN_MM = 50
"""Extra padding below the BraTS grid for the neck, mm."""

LAYERS: tuple[tuple[str, float], ...] = (
    ("csf", 2.5),
    ("inner_table", 2.0),
    ("diploe", 3.5),
    ("outer_table", 1.5),
    ("muscle", 2.5),
    ("fat", 4.0),
    ("skin", 1.5),
)
"""The head's layers from the brain outwards, each with its mean thickness (mm)."""

LAYER_CONTRAST: dict[str, tuple[float, float, float, float]] = {
    #             t1    t1ce  t2    flair   (multiples of the sequence's white-matter intensity)
    "csf": (0.35, 0.35, 2.4, 0.25),
    "inner_table": (0.06, 0.06, 0.06, 0.06),
    "diploe": (1.15, 1.2, 0.9, 1.0),
    "outer_table": (0.06, 0.06, 0.06, 0.06),
    "muscle": (0.65, 0.75, 0.55, 0.55),
    "fat": (1.35, 1.35, 1.15, 1.1),
    "skin": (0.75, 0.9, 0.9, 0.8),
}
"""Typical intensity of each head layer per sequence (``MODALITIES`` order: t1, t1ce, t2, flair)."""

NECK_CONTRAST = (0.65, 0.8, 0.6, 0.55)
"""Soft tissue of the neck per sequence (multiples of white matter)."""

ORIENTATIONS = ("axial", "coronal", "sagittal")

SLICE_COVERAGE_MM = {"axial": (150.0, 190.0), "coronal": (200.0, 230.0), "sagittal": (180.0, 210.0)}
"""The range of the slices' extent along their normal per orientation (mm): the whole brain and some margin, as a
technologist plans them (a brain is about 140 mm wide, 170 mm long and 120 mm high)."""

# The slice normal's LPS axis of each orientation and the two in-plane LPS axes (column order).
_ORIENTATION_AXES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


@dataclass(frozen=True)
class SequenceAcquisition:
    """How one sequence of a raw exam was acquired.

    Attributes:
        orientation: ``"axial"``, ``"coronal"`` or ``"sagittal"`` (the slices' plane).
        tilt_degrees: the grid's rotation away from that plane (oblique), degrees.
        spacing: native voxel spacing ``(x, y, z)`` of the image axes, mm (the third is the slice thickness).
        size: native matrix ``(x, y, z)``.
        pose: the head's rigid motion for this sequence: maps a native (scanner) LPS point to the
            phantom's LPS point (ITK convention, an ``Euler3DTransform``).
        scale: scanner units per unit of the phantom's intensity.
    """

    orientation: str
    tilt_degrees: float
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]
    pose: sitk.Euler3DTransform
    scale: float


@dataclass
class RawExam:
    """A simulated raw exam and its truth.

    Attributes:
        name: the case's name (``BraTS2021_XXXXX``, as the phantom it was made from).
        images: modality -> native SimpleITK image (int16, ``(x, y, z)``-indexed, LPS, each on its own grid).
        truth: the internal label map (uint8, 0 bg, 1 NCR, 2 ED, 3 ET) on the T1ce's native grid.
        clean: the phantom case (BraTS grid) the exam was made from, with its labels.
        acquisitions: modality -> :class:`SequenceAcquisition`.
    """

    name: str
    images: dict[str, sitk.Image]
    truth: sitk.Image
    clean: Case
    acquisitions: dict[str, SequenceAcquisition] = field(default_factory=dict)


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 32]))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], feature_voxels: float) -> np.ndarray:
    """A smooth zero-mean, unit-variance random field ``(z, y, x)`` with features of about ``feature_voxels``."""
    return smooth_noise(rng, shape, [max(1.0, n / feature_voxels) for n in shape])


def _white_matter_levels(case: Case, tissues: dict[str, np.ndarray]) -> np.ndarray:
    """Median intensity of each sequence (``MODALITIES`` order) where the phantom is almost pure white matter."""
    wm = (tissues["wm"] > 0.9) & (case.label == 0) if case.label is not None else tissues["wm"] > 0.9
    return np.array([float(np.median(case.images[m][wm])) for m in MODALITIES], dtype=np.float32)


def build_head(case: Case, tissues: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """The phantom inside a modelled head, on a padded 1 mm grid.

    Args:
        case: a phantom on the BraTS grid (1 mm, identity direction).
        tissues: its tissue fractions (``"brain"`` at least), ``(z, y, x)``.
        rng: the random stream.

    Returns:
        ``(images, labels, geometry)``: float32 ``(4, z, y, x)`` images in ``MODALITIES`` order,
        uint8 internal labels ``(z, y, x)`` and the padded grid (1 mm, identity direction, LPS).
    """


    mx, my, mz = HEAD_MARGIN_MM
    pad = ((mz + NECK_MARGIN_MM, mz), (my, my), (mx, mx))  # (z, y, x): (before, after)
    images = np.stack([np.pad(np.asarray(case.images[m], np.float32), pad) for m in MODALITIES])
    labels = np.pad(np.asarray(case.label if case.label is not None else np.zeros(case.geometry.shape), np.uint8), pad)
    brain = np.pad(tissues["brain"] > 0.5, pad)
    padded_shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    geometry = case.geometry.cropped((-pad[0][0], -pad[1][0], -pad[2][0]), padded_shape)
    white = _white_matter_levels(case, tissues)

    outside = _envelope_distance(brain)
    shape = brain.shape
    boundary: np.ndarray | float = 0.0
    head = brain.copy()
    # One smooth field varies every layer's thickness over the head (each layer by its own amount), one
    # gives every layer a little texture.
    thickness_field = _smooth_field(rng, shape, 40.0)
    texture_field = 1.0 + 0.06 * _smooth_field(rng, shape, 6.0)
    for name, thickness in LAYERS:
        variation = 1.0 + float(rng.uniform(0.1, 0.3)) * thickness_field
        outer = boundary + thickness * np.clip(variation, 0.5, 1.6) * float(rng.uniform(0.8, 1.25))
        layer = (outside <= outer) & ~head
        # Each layer's intensity: its typical value x a per-case factor, with a little texture.
        factor = rng.uniform(0.85, 1.15, size=4) * np.array(LAYER_CONTRAST[name], np.float32)
        texture = texture_field[layer]
        for channel in range(4):
            images[channel][layer] = white[channel] * factor[channel] * texture
        head |= layer
        boundary = outer
    # The neck: an elliptic column of soft tissue under the brain's lowest part, fat at its rim.
    zs = np.flatnonzero(brain.any(axis=(1, 2)))
    bottom = int(zs[0])
    footprint = brain[bottom : bottom + 12].any(axis=0)
    ys, xs = np.nonzero(footprint)
    cy, cx = ys.mean(), xs.mean()
    ry, rx = 45.0 * rng.uniform(0.9, 1.1), 55.0 * rng.uniform(0.9, 1.1)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]]
    ellipse = ((yy - cy + 10.0) / ry) ** 2 + ((xx - cx) / rx) ** 2
    neck_factor = rng.uniform(0.85, 1.15, size=4) * np.array(NECK_CONTRAST, np.float32)
    for z in range(0, bottom + 6):
        inside = (ellipse <= 1.0) & ~head[z]
        rim = inside & (ellipse > 0.8)
        for channel in range(4):
            images[channel, z][inside] = white[channel] * neck_factor[channel]
            images[channel, z][rim] = white[channel] * LAYER_CONTRAST["fat"][channel]
    return images, labels, geometry


ENVELOPE_CLOSING_MM = 10.0
"""The skull follows the brain's envelope: the brain mask closed by a ball of this radius (sulci and
the gaps between the lobes filled with CSF), not every fold."""


def _envelope_distance(brain: np.ndarray) -> np.ndarray:
    """Distance (mm) from the closed brain envelope, 0 inside it, ``(z, y, x)`` on the 1 mm grid of ``brain``.

    Computed on a 2 mm copy (scipy's Euclidean distance transform) and interpolated back (trilinear).
    """
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    coarse = brain[::2, ::2, ::2]
    radius = ENVELOPE_CLOSING_MM
    dilated = ndimage.distance_transform_edt(~coarse, sampling=2.0) <= radius
    closed = (ndimage.distance_transform_edt(dilated, sampling=2.0) > radius) | coarse
    distance = ndimage.distance_transform_edt(~closed, sampling=2.0).astype(np.float32)
    upsampled = F.interpolate(torch.from_numpy(distance)[None, None], scale_factor=2.0, mode="trilinear", align_corners=False)
    fine = upsampled[0, 0, : brain.shape[0], : brain.shape[1], : brain.shape[2]].numpy()
    padded = np.zeros(brain.shape, np.float32)
    padded[: fine.shape[0], : fine.shape[1], : fine.shape[2]] = fine
    return padded


def _direction(orientation: str, tilt_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """A 3x3 LPS direction matrix (columns = image axes x, y, z) for slices in ``orientation``, tilted."""
    first, second, normal = _ORIENTATION_AXES[orientation]
    base = np.zeros((3, 3))
    base[first, 0] = 1.0
    base[second, 1] = -1.0 if orientation != "axial" else 1.0  # coronal/sagittal rows run from head to feet
    base[normal, 2] = 1.0
    if np.linalg.det(base) < 0:
        base[:, 2] *= -1.0
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    rotation = sitk.VersorTransform(tuple(float(a) for a in axis), math.radians(tilt_degrees))
    return np.asarray(rotation.GetMatrix()).reshape(3, 3) @ base


def _native_grid(
    orientation: str, direction: np.ndarray, spacing: tuple[float, float, float], centre: np.ndarray, rng: np.random.Generator
) -> sitk.Image:
    """An empty native grid: field of view 220-256 mm in plane, slices covering :data:`SLICE_COVERAGE_MM`."""
    fov_plane = float(rng.uniform(220.0, 256.0))
    # The slices cover the head along their normal: feet-head for axial, left-right (sagittal), front-back (coronal).
    fov_slices = float(rng.uniform(*SLICE_COVERAGE_MM[orientation]))
    size = (
        int(round(fov_plane / spacing[0])),
        int(round(fov_plane * (1.0 if orientation == "axial" else 0.9) / spacing[1])),
        max(8, int(round(fov_slices / spacing[2]))),
    )
    grid = sitk.Image(size, sitk.sitkInt16)
    grid.SetSpacing(spacing)
    grid.SetDirection(tuple(float(v) for v in direction.ravel()))
    half = direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2.0)
    grid.SetOrigin(tuple(float(v) for v in centre - half))
    return grid


def simulate_raw_exam(seed: int = 0, index: int = 0, name: str | None = None) -> RawExam:
    """A simulated raw exam of phantom case ``(seed, index)`` (see the module docstring).

    Args:
        seed: the phantom data set's seed (the clean case is ``make_phantom(seed, index)``).
        index: the case's index in that data set.
        name: the case's name (default ``BraTS2021_XXXXX``).

    Returns:
        A :class:`RawExam` (native int16 images on four different grids, truth on the T1ce's grid).
    """
    phantom = make_phantom(seed, index, name or case_name(index))
    rng = _rng(seed, index)
    images, labels, head_geometry = build_head(phantom.case, phantom.tissues, rng)
    head_centre = np.asarray(head_geometry.ijk_to_lps() @ np.array([*(np.asarray(head_geometry.size) - 1) / 2.0, 1.0]))[:3]

    # A smooth bias field in head space (its standard deviation 5-20 % per sequence), one pattern per exam.
    bias = _smooth_field(rng, images.shape[1:], 90.0)

    base_pose = _pose(rng, head_centre, 12.0, 15.0)
    exam: dict[str, sitk.Image] = {}
    acquisitions: dict[str, SequenceAcquisition] = {}
    truth: sitk.Image | None = None
    for channel, modality in enumerate(MODALITIES):
        orientation = str(rng.choice(ORIENTATIONS, p=[0.6, 0.2, 0.2]))
        tilt = float(rng.uniform(0.0, 12.0))
        in_plane = float(rng.uniform(0.45, 1.0))
        thickness = float(rng.uniform(3.0, 6.0))
        spacing = (in_plane, in_plane, thickness)
        direction = _direction(orientation, tilt, rng)
        pose = base_pose if modality == "t1ce" else _compose(base_pose, _pose(rng, head_centre, 6.0, 8.0))
        centre = np.asarray(pose.GetInverse().TransformPoint(head_centre.tolist()))
        grid = _native_grid(orientation, direction, spacing, centre, rng)
        strength = float(rng.uniform(0.05, 0.2))
        signal = images[channel] * np.exp(strength * bias).astype(np.float32)
        volume = head_geometry.to_image(signal)
        native = _sample_thick(volume, grid, pose, spacing)
        array = sitk.GetArrayFromImage(native)
        white = float(np.percentile(images[channel][labels == 0][images[channel][labels == 0] > 0], 50))
        noise = float(rng.uniform(0.01, 0.03)) * white
        real = array + rng.normal(0.0, noise, array.shape).astype(np.float32)
        imaginary = rng.normal(0.0, noise, array.shape).astype(np.float32)
        magnitude = np.sqrt(real**2 + imaginary**2)
        scale = float(rng.uniform(150.0, 2500.0)) / max(white, 1e-6)
        stored = np.clip(np.round(magnitude * scale), 0, 32767).astype(np.int16)
        image = sitk.GetImageFromArray(stored)
        image.CopyInformation(native)
        exam[modality] = image
        acquisitions[modality] = SequenceAcquisition(
            orientation=orientation,
            tilt_degrees=tilt,
            spacing=spacing,
            size=tuple(int(v) for v in grid.GetSize()),  # type: ignore[arg-type]
            pose=pose,
            scale=scale,
        )
        if modality == "t1ce":
            truth = sitk.Resample(head_geometry.to_image(labels), grid, pose, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    assert truth is not None
    return RawExam(name=phantom.case.name, images=exam, truth=truth, clean=phantom.case, acquisitions=acquisitions)


def _pose(rng: np.random.Generator, centre: np.ndarray, degrees: float, millimetres: float) -> sitk.Euler3DTransform:
    """A random rigid motion about ``centre``: rotations up to ``degrees`` per axis, shifts up to ``millimetres``."""
    pose = sitk.Euler3DTransform()
    pose.SetCenter(tuple(float(v) for v in centre))
    angles = np.radians(rng.uniform(-degrees, degrees, size=3))
    pose.SetRotation(*(float(a) for a in angles))
    pose.SetTranslation(tuple(float(v) for v in rng.uniform(-millimetres, millimetres, size=3)))
    return pose


def _compose(first: sitk.Euler3DTransform, second: sitk.Euler3DTransform) -> sitk.Euler3DTransform:
    """The rigid transform applying ``second`` then ``first`` (ITK points: ``first(second(p))``)."""
    matrix = np.asarray(first.GetMatrix()).reshape(3, 3) @ np.asarray(second.GetMatrix()).reshape(3, 3)
    offset = np.asarray(first.TransformPoint(second.TransformPoint((0.0, 0.0, 0.0))))
    composed = sitk.Euler3DTransform()
    composed.SetCenter((0.0, 0.0, 0.0))
    composed.SetMatrix(tuple(float(v) for v in matrix.ravel()))
    composed.SetTranslation(tuple(float(v) for v in offset))
    return composed


def _sample_thick(volume: sitk.Image, grid: sitk.Image, pose: sitk.Transform, spacing: tuple[float, float, float]) -> sitk.Image:
    """``volume`` acquired on ``grid``: sampled on a grid 1 mm along the slice normal, profile-blurred, then subsampled.

    The slice profile is a Gaussian of full width at half maximum = slice thickness along the native
    z axis; the in-plane point-spread function one of the in-plane spacing (at least 1 mm).
    """
    thickness = spacing[2]
    fine_step = 1.0
    factor = max(1, int(round(thickness / fine_step)))
    fine = sitk.Image([grid.GetSize()[0], grid.GetSize()[1], grid.GetSize()[2] * factor], sitk.sitkFloat32)
    fine.SetSpacing((spacing[0], spacing[1], thickness / factor))
    fine.SetDirection(grid.GetDirection())
    first = grid.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, (1.0 / factor - 1.0) / 2.0))
    fine.SetOrigin(first)
    in_plane_sigma = max(spacing[0], 1.0) / 2.355
    blurred = sitk.SmoothingRecursiveGaussian(volume, in_plane_sigma)
    sampled = sitk.Resample(blurred, fine, pose, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    sigma_mm = math.sqrt(max((thickness / 2.355) ** 2 - in_plane_sigma**2, 0.0))
    if sigma_mm > 0:
        smoother = sitk.RecursiveGaussianImageFilter()
        smoother.SetSigma(sigma_mm)
        smoother.SetDirection(2)
        sampled = smoother.Execute(sampled)
    shrunk = sitk.BinShrink(sampled, [1, 1, factor])
    native = sitk.Cast(shrunk, sitk.sitkFloat32)
    native.SetOrigin(grid.GetOrigin())
    native.SetSpacing(grid.GetSpacing())
    native.SetDirection(grid.GetDirection())
    return native


def write_raw_exam(exam: RawExam, out: str | Path) -> Path:
    """Write ``exam`` under ``out/<name>/``: ``<name>_<modality>.nii.gz`` (native int16) and
    ``<name>_seg.nii.gz`` (BraTS 2021 labels on the T1ce's native grid); returns the folder."""
    folder = Path(out) / exam.name
    folder.mkdir(parents=True, exist_ok=True)
    for modality, image in exam.images.items():
        sitk.WriteImage(image, str(folder / f"{exam.name}_{modality}.nii.gz"), useCompression=True)
    truth = sitk.GetArrayFromImage(exam.truth)
    seg = sitk.GetImageFromArray(internal_to_brats2021(truth).astype(np.uint8))
    seg.CopyInformation(exam.truth)
    sitk.WriteImage(seg, str(folder / f"{exam.name}_seg.nii.gz"), useCompression=True)
    return folder


def write_raw_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    start: int = 0,
    progress: Callable[[int, Path], None] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Simulate and write raw exams ``start .. start + n - 1`` (:func:`write_raw_exam`); returns the folders.

    A folder that already holds one of the case names is refused (``FileExistsError``, before
    anything is written) unless ``overwrite``.
    """
    refuse_taken_names(out, start, n, overwrite)
    folders = []
    for index in range(start, start + n):
        folders.append(write_raw_exam(simulate_raw_exam(seed, index), out))
        if progress is not None:
            progress(index, folders[-1])
    return folders
