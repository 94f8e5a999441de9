"""Affine alignment to the atlas the default model was trained in, and the way back (issue 32).

The atlas (:func:`atlas_reference`) is the MNI ICBM152 2009 T1 template shipped in
``nslfcore/data/mni152`` (skull-stripped: 0 outside the brain, the brain mask the phantoms use is
``T1 > 0``), placed on the BraTS grid (240 x 240 x 155, 1 mm, identity direction, LPS) exactly as
:func:`~nslfcore.data.phantom_anatomy.template_coords` places it for every phantom, without that
function's random part: scale 0.93 (the mean of its 0.93 x (1 +- 6 %)), no rotation, no shift, no
elastic displacement; the brain's top 5 mm below the grid's top slice, centred in x and y. This,
rather than the template's own 197 x 233 x 189 grid, is the space the default model saw: the same
grid size, the same brain size and the same position in the field of view as its training cases.
It depends on the shipped file only (not on ``$NSLF_MNI_TEMPLATE_DIR``).

:func:`register_to_atlas` aligns a skull-stripped T1ce to the atlas T1 by Mattes mutual
information in two stages, both on 2 mm working copies (the atlas's 2 x 2 x 2 block means; the
exam smoothed and resampled to 2 mm isotropic along its own axes, so thick slices do not bias the
pyramid), with the metric sampled (seeded) inside the atlas brain mask dilated by 4 mm: a rigid
stage (``Euler3DTransform``, started from the images' centres of mass) initialises an affine one
(``AffineTransform``, 12 parameters), each multi-resolution (shrink 4, 2, 1). The result must
improve the metric, share at least :data:`~nslfcore.preprocess.registration.MIN_MUTUAL_INFORMATION`,
scale each axis by :data:`MIN_SCALE` to :data:`MAX_SCALE`, shear by less than :data:`MAX_SHEAR` and
not mirror; otherwise :class:`~nslfcore.preprocess.registration.RegistrationError`.

:func:`to_atlas` resamples sequences onto the atlas grid (linear, 0 outside); :func:`from_atlas`
brings the atlas-space labels (nearest neighbour) and fused volume (linear) back onto the exam's
native grid. Transforms follow ITK's convention: :attr:`AtlasAlignment.transform` maps an atlas
point (LPS mm) to the native exam's point; ``sitk.WriteTransform`` writes it as a ``.tfm`` file
that SimpleITK and Slicer read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from nslfcore.data.templates import PACKAGED_TEMPLATE_DIR, TEMPLATE_FILES
from nslfcore.preprocess.orientation import isotropic_copy, resample_like
from nslfcore.preprocess.registration import RegistrationError, evaluate_metric, metric_problem, optimise

ATLAS_SIZE = (240, 240, 155)
"""The atlas grid's size ``(x, y, z)``: the BraTS grid of the phantoms (1 mm, origin ``(0, -239, 0)``, LPS)."""

TEMPLATE_SCALE = 0.93
"""Template mm -> atlas mm: the mean of the phantoms' random scale (``0.93 x (1 +- 6 %)``)."""

TOP_MARGIN_MM = 5.0
"""The template brain's top lies this far below the atlas grid's top slice (as in the phantoms)."""

MIN_SCALE, MAX_SCALE = 0.7, 1.4
"""The plausible range of each axis's scale (native mm per atlas mm) of an exam's brain."""

MAX_SHEAR = 0.15
"""The largest plausible shear (off-diagonal of the affine's triangular factor, relative to its scale)."""

WORKING_SPACING_MM = 2.0
MASK_MARGIN_MM = 4.0
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (4.0, 2.0, 0.0)
DEFAULT_SEED = 32


@functools.lru_cache(maxsize=1)
def _atlas() -> sitk.Image:
    template = sitk.Cast(sitk.ReadImage(str(PACKAGED_TEMPLATE_DIR / TEMPLATE_FILES["t1"])), sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(template) > 0  # (z, y, x)
    nonzero = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    corners = [
        template.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
        for i in (nonzero[2][0], nonzero[2][-1])
        for j in (nonzero[1][0], nonzero[1][-1])
        for k in (nonzero[0][0], nonzero[0][-1])
    ]
    lps = np.asarray(corners)
    anchor_template = np.array([lps[:, 0].mean(), lps[:, 1].mean(), lps[:, 2].max()])
    grid = sitk.Image([int(v) for v in ATLAS_SIZE], sitk.sitkFloat32)
    grid.SetOrigin((0.0, -float(ATLAS_SIZE[1] - 1), 0.0))
    top = np.asarray(
        grid.TransformContinuousIndexToPhysicalPoint([(ATLAS_SIZE[0] - 1) / 2, (ATLAS_SIZE[1] - 1) / 2, ATLAS_SIZE[2] - 1])
    )
    anchor_atlas = top - np.array([0.0, 0.0, TOP_MARGIN_MM])
    placement = sitk.AffineTransform(3)  # atlas point -> template point
    placement.SetMatrix([1.0 / TEMPLATE_SCALE if r == c else 0.0 for r in range(3) for c in range(3)])
    placement.SetTranslation([float(v) for v in anchor_template - anchor_atlas / TEMPLATE_SCALE])
    return resample_like(template, grid, placement, "linear")


def atlas_reference() -> sitk.Image:
    """The atlas: the shipped MNI152 T1 template (float32, 0 outside the brain) on the phantoms' BraTS grid.

    240 x 240 x 155 voxels ``(x, y, z)``, 1 mm, origin ``(0, -239, 0)`` mm, identity direction
    (LPS); its array is ``(z, y, x)``. The template is scaled by :data:`TEMPLATE_SCALE` and placed
    as the phantoms place it (see the module docstring). A fresh copy on every call.
    """
    return sitk.Image(_atlas())


@dataclass(frozen=True)
class AtlasAlignment:
    """The outcome of :func:`register_to_atlas`.

    Attributes:
        transform: maps an atlas point to the native exam's point (LPS mm, ITK convention); use it
            as ``resample_like(native_image, alignment.reference, alignment.transform)``.
        reference: the atlas (:func:`atlas_reference`), whose grid :func:`to_atlas` samples on.
        rigid: the rigid stage's transform (same convention), which initialised ``transform``.
        metric: final Mattes mutual information on the 2 mm working copies (negative; lower is better).
        initial_metric: the same metric for the starting (centres of mass aligned) transform.
        scales: native mm per atlas mm along each axis of the affine's triangular factor.
        shear: the largest relative shear of the affine.
    """

    transform: sitk.AffineTransform
    reference: sitk.Image
    rigid: sitk.Euler3DTransform
    metric: float
    initial_metric: float
    scales: tuple[float, float, float]
    shear: float

    def problem(self) -> str | None:
        """Why the alignment is implausible (a sentence fragment), or ``None`` when it is plausible."""
        metric = metric_problem(self.metric, self.initial_metric)
        if metric is not None:
            return metric
        if np.linalg.det(np.asarray(self.transform.GetMatrix()).reshape(3, 3)) <= 0:
            return "it mirrors the brain"
        if not all(MIN_SCALE <= s <= MAX_SCALE for s in self.scales):
            scales = ", ".join(f"{s:.2f}" for s in self.scales)
            return f"it scales the brain by ({scales}) (each axis must lie in {MIN_SCALE:g}-{MAX_SCALE:g})"
        if self.shear >= MAX_SHEAR:
            return f"it shears the brain by {self.shear:.2f} (at most {MAX_SHEAR:g} is plausible)"
        return None


def _scales_and_shear(matrix: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """Per-axis scales and the largest relative shear of ``matrix`` = rotation @ upper-triangular (QR)."""
    _, upper = np.linalg.qr(matrix)
    upper = np.diag(np.sign(np.diag(upper))) @ upper
    scales = np.diag(upper).copy()
    relative = upper / scales[:, None]
    shear = float(np.max(np.abs(relative[np.triu_indices(3, 1)])))
    return (float(scales[0]), float(scales[1]), float(scales[2])), shear


def register_to_atlas(
    t1ce: sitk.Image, *, seed: int = DEFAULT_SEED, sampling: float = 0.5, iterations: int = 200, name: str = "t1ce"
) -> AtlasAlignment:
    """The affine transform aligning a skull-stripped T1ce to the atlas (see the module docstring).

    Args:
        t1ce: the exam's skull-stripped T1ce (any grid, LPS; 0 outside the brain).
        seed: the metric sampling's seed (same inputs and seed, same transform).
        sampling: fraction of the working atlas's voxels the metric samples, in (0, 1] (those
            outside the dilated brain mask are dropped).
        iterations: the most optimizer iterations per resolution and stage.
        name: the image's name or file, used in the error message.

    Returns:
        An :class:`AtlasAlignment` whose ``transform`` maps atlas points to native points.

    Raises:
        RegistrationError: the registration failed or gave an implausible transform (one sentence).
    """
    reference = atlas_reference()
    fixed = sitk.BinShrink(reference, [int(WORKING_SPACING_MM)] * 3)
    radius = int(round(MASK_MARGIN_MM / WORKING_SPACING_MM))
    mask = sitk.BinaryDilate(sitk.Cast(fixed > 0, sitk.sitkUInt8), [radius] * 3)
    moving = isotropic_copy(t1ce, WORKING_SPACING_MM)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(moving)
    if not stats.GetMaximum() > stats.GetMinimum():
        raise RegistrationError(
            f"Cannot align {name} to the atlas: it is constant ({stats.GetMinimum():g} everywhere); "
            "check that its file holds the scan."
        )
    try:
        rigid = sitk.Euler3DTransform(
            sitk.CenteredTransformInitializer(
                fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
            )
        )
        initial_metric = evaluate_metric(fixed, moving, rigid, sampling, seed, mask)
        optimise(fixed, moving, rigid, sampling, seed, iterations, SHRINK_FACTORS, SMOOTHING_SIGMAS_MM, mask)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        optimise(fixed, moving, affine, sampling, seed, iterations, SHRINK_FACTORS, SMOOTHING_SIGMAS_MM, mask)
        metric = evaluate_metric(fixed, moving, affine, sampling, seed, mask)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise RegistrationError(
            f"Aligning {name} to the atlas failed ({reason}); check that it is a skull-stripped brain MR image."
        ) from error
    scales, shear = _scales_and_shear(np.asarray(affine.GetMatrix(), dtype=float).reshape(3, 3))
    alignment = AtlasAlignment(
        transform=affine,
        reference=reference,
        rigid=rigid,
        metric=metric,
        initial_metric=initial_metric,
        scales=scales,
        shear=shear,
    )
    problem = alignment.problem()
    if problem is not None:
        raise RegistrationError(
            f"Aligning {name} to the atlas did not converge: {problem}; check that it is a skull-stripped brain MR image."
        )
    return alignment


def to_atlas(images: dict[str, sitk.Image], alignment: AtlasAlignment) -> dict[str, sitk.Image]:
    """Each native image (on the grid the alignment was computed for, or any grid in the same LPS frame)
    resampled onto the atlas grid: linear, 0 outside its field of view, pixel type kept.

    Images are ``(x, y, z)``-indexed SimpleITK images; the results are 240 x 240 x 155, 1 mm.
    """
    return {name: resample_like(image, alignment.reference, alignment.transform, "linear") for name, image in images.items()}


def from_atlas(
    labels: sitk.Image, fused: sitk.Image | None, alignment: AtlasAlignment, native: sitk.Image
) -> tuple[sitk.Image, sitk.Image | None]:
    """Atlas-space results back onto ``native``'s grid (size, spacing, origin, direction).

    Args:
        labels: a label map on the atlas grid (any integer type); resampled by nearest neighbour.
        fused: the fused volume on the atlas grid, or ``None``; resampled linearly.
        alignment: the :func:`register_to_atlas` result of this exam.
        native: an image on the exam's native grid (e.g. its T1ce); its voxel values are not used.

    Returns:
        ``(labels, fused)`` on the native grid, pixel types kept, 0 outside the atlas grid
        (``fused`` is ``None`` when it was given as ``None``).
    """
    inverse = alignment.transform.GetInverse()  # native point -> atlas point
    back_labels = resample_like(labels, native, inverse, "nearest")
    back_fused = resample_like(fused, native, inverse, "linear") if fused is not None else None
    return back_labels, back_fused
