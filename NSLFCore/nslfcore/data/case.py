"""A case in memory (:class:`Case`), its grid (:class:`Geometry`) and its files (:class:`CaseFiles`).

Axis and space conventions of the whole :mod:`nslfcore.data` package:

* voxel arrays are numpy arrays in SimpleITK order ``(z, y, x)`` = ``(k, j, i)``;
* geometry follows SimpleITK/ITK: ``size``, ``spacing`` and ``origin`` are in ``(x, y, z)``
  order, spacing and origin in mm, in LPS physical space; ``direction`` is the 3x3 row-major
  direction cosine matrix in LPS (column ``c`` is the physical direction of voxel axis ``c``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore import MODALITIES

Vec3 = tuple[float, float, float]
Mat3 = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of an image, as SimpleITK describes it.

    Attributes:
        size: number of voxels along ``(x, y, z)`` (i.e. ``(i, j, k)``).
        spacing: voxel spacing along ``(x, y, z)``, mm.
        origin: LPS position of voxel ``(0, 0, 0)``'s centre, mm, ``(x, y, z)``.
        direction: 3x3 direction matrix (row-major, LPS); column ``c`` is the unit physical
            direction of voxel index axis ``c`` (``c`` = i, j, k).
    """

    size: tuple[int, int, int]
    spacing: Vec3
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: Mat3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    @classmethod
    def from_image(cls, image: sitk.Image) -> Geometry:
        """The geometry of a 3-D SimpleITK image."""
        d = [float(v) for v in image.GetDirection()]
        return cls(
            size=tuple(int(v) for v in image.GetSize()),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            direction=(tuple(d[0:3]), tuple(d[3:6]), tuple(d[6:9])),  # type: ignore[arg-type]
        )

    @classmethod
    def from_matrix(cls, size: tuple[int, int, int], ijk_to_lps: np.ndarray) -> Geometry:
        """Build from a 4x4 voxel-index ``(i, j, k, 1)`` -> LPS mm matrix (no shear allowed)."""
        m = np.asarray(ijk_to_lps, dtype=float)
        spacing = np.linalg.norm(m[:3, :3], axis=0)
        direction = m[:3, :3] / spacing
        return cls(
            size=tuple(int(v) for v in size),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in spacing),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in m[:3, 3]),  # type: ignore[arg-type]
            direction=tuple(tuple(float(v) for v in row) for row in direction),  # type: ignore[arg-type]
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)`` of a volume on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set spacing, origin and direction of ``image`` (in place) and return it; sizes must agree."""
        if tuple(image.GetSize()) != tuple(self.size):
            raise ValueError(f"image size {image.GetSize()} differs from geometry size {self.size}.")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection([v for row in self.direction for v in row])
        return image

    def to_image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of a ``(z, y, x)`` array on this grid."""
        return self.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel indices ``(i, j, k, 1)`` (x, y, z order) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.direction, dtype=float) * np.asarray(self.spacing, dtype=float)
        m[:3, 3] = self.origin
        return m

    def cropped(self, start_zyx: tuple[int, int, int], shape_zyx: tuple[int, int, int]) -> Geometry:
        """The grid of the sub-volume ``array[z0:z0+nz, y0:y0+ny, x0:x0+nx]`` (start may be negative = padding)."""
        ijk = np.array([start_zyx[2], start_zyx[1], start_zyx[0], 1.0])
        origin = self.ijk_to_lps() @ ijk
        return replace(
            self,
            size=(int(shape_zyx[2]), int(shape_zyx[1]), int(shape_zyx[0])),
            origin=tuple(float(v) for v in origin[:3]),  # type: ignore[arg-type]
        )


@dataclass
class Case:
    """One subject's co-registered volumes in memory.

    Attributes:
        name: case identifier (e.g. ``BraTS2021_00000``).
        images: modality name (see :data:`nslfcore.MODALITIES`) -> float32 array ``(z, y, x)``; an
            inference input may lack one (:attr:`missing`, see :mod:`nslfcore.inference.inputs`).
        label: uint8 internal labels ``(z, y, x)`` (0 bg, 1 NCR, 2 ED, 3 ET; see
            :mod:`nslfcore.data.labels`), or ``None`` when the case has no segmentation.
        geometry: the shared voxel grid (``(x, y, z)`` sizes, mm, LPS).
        paths: where each volume was read from (modality names and ``"seg"``); empty if generated.
    """

    name: str
    images: dict[str, np.ndarray]
    label: np.ndarray | None
    geometry: Geometry
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """Modalities (in :data:`nslfcore.MODALITIES` order) the case has no volume of (inference accepts one missing)."""
        return [m for m in MODALITIES if m not in self.images]

    def stacked(self) -> np.ndarray:
        """The four modalities as one float32 array ``(4, z, y, x)`` in :data:`nslfcore.MODALITIES` order.

        A :attr:`missing` modality is an all-zero channel (which normalisation keeps at zero).
        """
        shape = self.geometry.shape
        return np.stack([np.asarray(self.images[m], dtype=np.float32) if m in self.images else np.zeros(shape, np.float32)
                         for m in MODALITIES])  # fmt: skip


@dataclass
class CaseFiles:
    """The files of one case found on disk (some may be missing).

    Attributes:
        name: case identifier (folder name for BraTS layouts).
        images: modality name -> path, for the modalities that were found.
        label: path of the segmentation, or ``None``.
        label_convention: ``"brats2021"``, ``"brats2023"`` or ``"auto"`` (see :mod:`nslfcore.data.labels`).
        problems: problems found while matching files (e.g. two files for one modality).
    """

    name: str
    images: dict[str, Path]
    label: Path | None = None
    label_convention: str = "auto"
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Modalities (in :data:`nslfcore.MODALITIES` order) without a file."""
        return [m for m in MODALITIES if m not in self.images]

    def paths(self) -> dict[str, Path]:
        """All known files: modalities and, if present, ``"seg"``."""
        out = dict(self.images)
        if self.label is not None:
            out["seg"] = self.label
        return out
