"""BraTS-like phantom cases: four MR contrasts and tumour labels, generated from a seed.

Two modes:

* realistic (:func:`generate_case`): anatomy from the MNI ICBM152 2009c template's tissue
  probability maps (shipped in ``nslfcore/data/mni152``; needs scipy), randomly
  deformed per case, on the BraTS grid: 240 x 240 x 155 voxels ``(x, y, z)``, 1 mm, direction
  identity (LPS), origin (0, -239, 0) mm -- like real BraTS files.
* tiny (:func:`generate_tiny_case`, e.g. 48^3, for tests): procedural ellipsoid anatomy, numpy +
  torch only, well under a second per case.

Both add one or two lesions (:mod:`nslfcore.data.phantom_tumour`: NCR core, ET rim -- absent in
about 15 % of cases --, edema spreading along white matter, mass effect) and synthesise T1, T1ce,
T2 and FLAIR from tissue fractions (:mod:`nslfcore.data.phantom_contrast`, which holds the
contrast table). Case ``i`` of seed ``s`` uses its own random stream derived from ``(s, i)``, so
a case does not depend on how many others are made, and the same seed gives the same bytes.

:func:`write_case` writes the BraTS 2021 layout
``<out>/BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz`` with int16 images and
labels {0, 1, 2, 4} (internal ET 3 -> 4, see :mod:`nslfcore.data.labels`).

Arrays are ``(z, y, x)``; geometry ``(x, y, z)``, mm, LPS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.case import Case, Geometry
from nslfcore.data.io import write_image
from nslfcore.data.labels import internal_to_brats2021
from nslfcore.data.phantom_anatomy import ellipsoid_anatomy, template_anatomy, template_coords
from nslfcore.data.phantom_contrast import synthesise
from nslfcore.data.phantom_fields import sample
from nslfcore.data.phantom_tumour import mass_effect_coords, sample_lesions, tumour_fractions

#: The BraTS grid: size (x, y, z) voxels, spacing (x, y, z) mm, origin (x, y, z) LPS mm, identity direction.
BRATS_SIZE: tuple[int, int, int] = (240, 240, 155)
BRATS_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
TINY_SIZE: tuple[int, int, int] = (48, 48, 48)


def brats_geometry(size: Sequence[int] = BRATS_SIZE) -> Geometry:
    """A BraTS-like grid of ``size`` (x, y, z) voxels: 1 mm, identity direction (LPS), origin (0, -(ny-1), 0) mm."""
    sx, sy, sz = (int(v) for v in size)
    return Geometry(size=(sx, sy, sz), spacing=BRATS_SPACING, origin=(0.0, -float(sy - 1), 0.0))


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of case ``index`` of a data set generated with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def case_name(index: int) -> str:
    """``BraTS2021_XXXXX`` for case ``index``."""
    return f"BraTS2021_{int(index):05d}"


@dataclass
class Phantom:
    """A generated case and its ground-truth normal tissue: ``tissues`` maps ``csf``, ``gm``, ``wm``,
    ``brain`` to fractions ``(z, y, x)`` in [0, 1] (after mass effect, before the tumour replaced tissue)."""

    case: Case
    tissues: dict[str, np.ndarray]


def _finish(name: str, rng: np.random.Generator, anatomy: dict[str, np.ndarray], lesions: list, geometry: Geometry) -> Phantom:
    spacing = tuple(float(s) for s in geometry.spacing[::-1])  # (z, y, x) mm
    tumour = tumour_fractions(rng, lesions, anatomy["wm"], spacing)  # type: ignore[arg-type]
    images, label = synthesise(rng, anatomy, tumour, spacing)  # type: ignore[arg-type]
    return Phantom(Case(name=name, images={m: images[m] for m in MODALITIES}, label=label, geometry=geometry), anatomy)


def generate_tiny_case(seed: int = 0, size: Sequence[int] = TINY_SIZE, index: int = 0, name: str | None = None) -> Case:
    """A small procedural phantom of ``size`` voxels ``(z, y, x)`` (1 mm), numpy + torch only.

    Returns a :class:`Case` with float32 images ``(z, y, x)`` and internal labels (0-3) on a
    BraTS-like grid (identity direction, LPS).
    """
    return make_tiny_phantom(seed, size, index, name).case


def generate_case(seed: int = 0, index: int = 0, name: str | None = None) -> Case:
    """A realistic BraTS-like phantom (240 x 240 x 155, 1 mm) from the MNI template; needs ``nslfcore[phantom]``.

    Returns a :class:`Case` with float32 images ``(z, y, x)`` in scanner-like ranges (0 outside
    the brain) and internal labels (0-3); geometry: BraTS grid, LPS.
    """
    return make_phantom(seed, index, name).case


def make_tiny_phantom(seed: int = 0, size: Sequence[int] = TINY_SIZE, index: int = 0, name: str | None = None) -> Phantom:
    """:func:`generate_tiny_case` with its tissue fractions."""
    shape = tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"tiny phantom size {tuple(size)} must be three sizes (z, y, x) of at least 16 voxels.")
    rng = case_rng(seed, index)
    geometry = brats_geometry((shape[2], shape[1], shape[0]))
    anatomy = ellipsoid_anatomy(rng, shape)
    scale = max(0.35, 0.41 * float(np.mean(shape)) / 60.0)
    lesions = sample_lesions(rng, anatomy["wm"], anatomy["brain"], (1.0, 1.0, 1.0), scale=scale)
    source = mass_effect_coords(lesions, shape, (1.0, 1.0, 1.0))
    keys = ("csf", "gm", "wm", "brain")
    pushed = sample(np.stack([anatomy[k] for k in keys]), source)
    anatomy = {k: np.ascontiguousarray(v) for k, v in zip(keys, pushed)}
    return _finish(name or case_name(index), rng, anatomy, lesions, geometry)


def make_phantom(seed: int = 0, index: int = 0, name: str | None = None) -> Phantom:
    """:func:`generate_case` with its tissue fractions."""
    rng = case_rng(seed, index)
    geometry = brats_geometry()
    coords = template_coords(rng, geometry)
    anatomy = template_anatomy(coords)
    lesions = sample_lesions(rng, anatomy["wm"], anatomy["brain"], (1.0, 1.0, 1.0))
    source = mass_effect_coords(lesions, geometry.shape, (1.0, 1.0, 1.0))
    anatomy = template_anatomy(sample(coords, source))
    return _finish(name or case_name(index), rng, anatomy, lesions, geometry)


def write_case(case: Case, out: str | Path, dtype: type = np.int16) -> Path:
    """Write ``case`` in the BraTS 2021 layout under ``out``; returns the case folder.

    Images are stored as ``dtype`` (int16 by default; float32 allowed), labels as uint8 {0,1,2,4}.
    """
    folder = Path(out) / case.name
    for modality in MODALITIES:
        write_image(case.images[modality], case.geometry, folder / f"{case.name}_{modality}.nii.gz", dtype)
    if case.label is not None:
        write_image(internal_to_brats2021(case.label), case.geometry, folder / f"{case.name}_seg.nii.gz", np.uint8)
    return folder


def refuse_taken_names(out: str | Path, start: int, n: int, overwrite: bool) -> None:
    """Raise ``FileExistsError`` (before anything is written) when ``out`` already holds one of the case
    names ``start .. start + n - 1`` and ``overwrite`` is not set: they are real BraTS IDs."""
    taken = [case_name(i) for i in range(start, start + n) if (Path(out) / case_name(i)).exists()]
    if taken and not overwrite:
        raise FileExistsError(
            f"{out} already holds {', '.join(taken[:3])}{' ...' if len(taken) > 3 else ''}; "
            "choose another folder or --start, or pass --overwrite to replace them."
        )


def write_phantom_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    tiny: bool = False,
    size: Sequence[int] | None = None,
    start: int = 0,
    progress: Callable[[int, Path], None] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Generate and write cases ``start .. start + n - 1``; ``size`` (z, y, x) only for ``tiny``. Returns the folders.

    The case names are real BraTS IDs, so a folder that already holds one of them is refused
    (``FileExistsError``, before anything is written) unless ``overwrite``.
    """
    refuse_taken_names(out, start, n, overwrite)
    folders = []
    for index in range(start, start + n):
        if tiny:
            case = generate_tiny_case(seed, size or TINY_SIZE, index=index)
        else:
            if size is not None and tuple(size) != BRATS_SIZE[::-1]:
                raise ValueError(f"--size {tuple(size)} needs --tiny; realistic phantoms are always 155 x 240 x 240 (z, y, x).")
            case = generate_case(seed, index=index)
        folders.append(write_case(case, out))
        if progress is not None:
            progress(index, folders[-1])
    return folders
