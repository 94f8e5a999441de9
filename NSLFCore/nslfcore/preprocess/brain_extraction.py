"""Brain extraction (skull stripping) of a head MR image with a published network (issue 32).

Three extractors, chosen by name:

* ``"deepbet"`` (the default): deepbet (Fisch et al. 2024, MIT licence), a PyTorch network whose
  TorchScript weights ship inside its wheel (``pip install deepbet``; nothing is downloaded at run
  time). It runs on a CPU in a few seconds. The image is first resampled (linear) to 1 mm along the
  LPS axes over its own bounding box (deepbet scales its input to a cube, so giving it 1 mm voxels
  keeps thick-sliced exams in proportion), its array handed over in RAS ``(x, y, z)`` order as
  deepbet's own file reader does, its mask kept at deepbet's threshold (0.5) and post-processing
  (largest connected component, holes filled) and resampled back (nearest neighbour) onto the
  image's grid.
* ``"hd-bet"``: HD-BET's command line (``hd-bet -i IN -o OUT``), when it is installed with its
  weights (its package downloads them on first use, which this project never does for you).
* ``"synthstrip"``: FreeSurfer's SynthStrip command line (``mri_synthstrip -i IN -m MASK``), when on
  the ``PATH``.

The mask must hold a plausible brain: :data:`BRAIN_VOLUME_ML` (an adult brain with a tumour, a
margin either way); otherwise :class:`BrainExtractionError` (one sentence).

Images are ``SimpleITK.Image`` (indexed ``(x, y, z)``, mm, LPS); masks are uint8 (1 = brain) on
the input image's grid.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore.errors import NSLFError
from nslfcore.preprocess.orientation import resample_like

EXTRACTORS = ("deepbet", "hd-bet", "synthstrip")
"""The extractors :func:`extract_brain` knows, in order of preference."""

_COMMANDS = {"hd-bet": "hd-bet", "synthstrip": "mri_synthstrip"}

BRAIN_VOLUME_ML = (700.0, 2400.0)
"""The plausible volume of an extracted brain, ml (cm^3)."""

DEEPBET_SPACING_MM = 1.0


class BrainExtractionError(NSLFError, RuntimeError):
    """Brain extraction failed or gave an implausible mask (empty, too small or too large)."""


def available_extractors() -> list[str]:
    """The extractors usable here, in :data:`EXTRACTORS` order (deepbet when importable, the others when on the PATH)."""
    found = []
    for method in EXTRACTORS:
        if method == "deepbet":
            if importlib.util.find_spec("deepbet") is not None:
                found.append(method)
        elif shutil.which(_COMMANDS[method]) is not None:
            found.append(method)
    return found


def _axis_aligned_grid(image: sitk.Image, spacing: float) -> sitk.Image:
    """A grid of ``spacing`` mm along the LPS axes (identity direction) covering ``image``'s bounding box."""
    size = image.GetSize()
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint((i - 0.5, j - 0.5, k - 0.5))
            for i in (0, size[0])
            for j in (0, size[1])
            for k in (0, size[2])
        ]
    )
    low, high = corners.min(axis=0), corners.max(axis=0)
    count = [max(1, int(np.ceil((h - lo) / spacing))) for lo, h in zip(low, high)]
    grid = sitk.Image(count, sitk.sitkFloat32)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin([float(lo + spacing / 2.0) for lo in low])
    return grid


def _deepbet_mask(iso: sitk.Image, device: str) -> sitk.Image:
    """deepbet's brain mask (uint8) of ``iso``, an image on a 1 mm LPS-aligned grid (identity direction)."""
    try:
        from deepbet import BrainExtraction
    except ImportError as error:  # pragma: no cover - exercised where deepbet is missing
        raise BrainExtractionError(
            "Brain extraction needs deepbet: install it with `pip install deepbet` "
            "(or NSLFCore's `preprocess` extra), or choose another extractor."
        ) from error
    lps_zyx = sitk.GetArrayFromImage(iso)
    ras_xyz = np.ascontiguousarray(lps_zyx.transpose(2, 1, 0)[::-1, ::-1, :])  # (x, y, z), x and y flipped to R and A
    extractor = BrainExtraction(no_gpu=device == "cpu")
    probability = extractor.run_model(ras_xyz.copy())
    mask = extractor.postprocess(probability > 0.5)
    mask_zyx = np.ascontiguousarray(np.asarray(mask)[::-1, ::-1, :].transpose(2, 1, 0)).astype(np.uint8)
    out = sitk.GetImageFromArray(mask_zyx)
    out.CopyInformation(iso)
    return out


def _command_mask(image: sitk.Image, method: str) -> sitk.Image:
    """The brain mask an extractor's command line writes for ``image`` (a temporary NIfTI each way), on its grid."""
    command = shutil.which(_COMMANDS[method])
    if command is None:
        raise BrainExtractionError(f"Brain extraction with {method} needs its command `{_COMMANDS[method]}` on the PATH.")
    with tempfile.TemporaryDirectory(prefix="nslf-bet-") as folder:
        source, target = Path(folder) / "image.nii.gz", Path(folder) / "mask.nii.gz"
        sitk.WriteImage(image, str(source))
        if method == "synthstrip":
            arguments = [command, "-i", str(source), "-m", str(target)]
        else:  # hd-bet writes <out>_mask.nii.gz beside its skull-stripped <out>.nii.gz
            arguments = [command, "-i", str(source), "-o", str(Path(folder) / "brain.nii.gz"), "-device", "cpu"]
            target = Path(folder) / "brain_mask.nii.gz"
        result = subprocess.run(arguments, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not target.exists():
            last = (result.stderr or result.stdout).strip().splitlines()
            raise BrainExtractionError(
                f"Brain extraction with {method} failed ({last[-1] if last else f'exit status {result.returncode}'})."
            )
        return sitk.Cast(sitk.ReadImage(str(target)) > 0, sitk.sitkUInt8)


@dataclass(frozen=True)
class BrainMask:
    """The outcome of :func:`extract_brain`.

    Attributes:
        native: uint8 mask (1 = brain) on the input image's grid (size, spacing, origin, direction).
        fine: the same mask on the 1 mm LPS-aligned grid the extractor ran on (identity direction),
            the one to carry to other 1 mm grids (a thick-sliced native mask is coarser).
        method: the extractor that made it.
        volume_ml: the brain's volume (of ``fine``), ml.
    """

    native: sitk.Image
    fine: sitk.Image
    method: str
    volume_ml: float


def extract_brain(image: sitk.Image, *, method: str = "deepbet", device: str = "cpu", name: str = "t1ce") -> BrainMask:
    """The brain mask of a head MR image (see the module docstring).

    Args:
        image: a T1-weighted (or T1ce) head image, any grid and orientation (LPS).
        method: one of :data:`EXTRACTORS`.
        device: ``"cpu"`` or ``"cuda"`` (deepbet only; the others run as installed).
        name: the image's name or file, used in error messages.

    Returns:
        A :class:`BrainMask`: on the image's grid and on the 1 mm grid the extractor ran on.

    Raises:
        BrainExtractionError: the extractor is missing or failed, or its mask is empty or not
            :data:`BRAIN_VOLUME_ML` in volume (one sentence).
        ValueError: ``method`` is not one of :data:`EXTRACTORS`.
    """
    if method not in EXTRACTORS:
        raise ValueError(f"brain extractor {method!r} must be one of {', '.join(EXTRACTORS)}.")
    grid = _axis_aligned_grid(image, DEEPBET_SPACING_MM)
    iso = resample_like(sitk.Cast(image, sitk.sitkFloat32), grid, None, "linear")
    fine = _deepbet_mask(iso, device) if method == "deepbet" else _command_mask(iso, method)
    fine = sitk.Cast(resample_like(fine, iso, None, "nearest"), sitk.sitkUInt8)  # a command's mask may come on another grid
    volume_ml = brain_volume_ml(fine)
    low, high = BRAIN_VOLUME_ML
    if volume_ml <= 0.0:
        raise BrainExtractionError(f"Brain extraction ({method}) found no brain in {name}; check that it is a head MR image.")
    if not low <= volume_ml <= high:
        raise BrainExtractionError(
            f"Brain extraction ({method}) of {name} gave an implausible brain of {volume_ml:.0f} ml "
            f"(expected {low:.0f}-{high:.0f} ml); check that it is an adult head T1/T1ce image, or skull-strip it yourself."
        )
    native = sitk.Cast(resample_like(fine, image, None, "nearest"), sitk.sitkUInt8)
    return BrainMask(native=native, fine=fine, method=method, volume_ml=volume_ml)


def brain_volume_ml(mask: sitk.Image) -> float:
    """The volume of a binary mask, ml."""
    return float((sitk.GetArrayViewFromImage(mask) > 0).sum()) * float(np.prod(mask.GetSpacing())) / 1000.0
