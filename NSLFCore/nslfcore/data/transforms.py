"""Preprocessing and training-crop transforms.

Volume-level preprocessing (numpy, once per case, cached by :mod:`nslfcore.data.cache`):

1. :func:`brain_mask`: brain = any modality > 0 (BraTS volumes are skull-stripped, zero outside).
2. :func:`brain_bbox` / :class:`CropRecord`: crop to the brain's bounding box, remembering where
   the box lies so results can be pasted back onto the original grid (:meth:`CropRecord.uncrop`).
3. :func:`normalize`: ``"paper"`` -- per modality subtract the mean over brain voxels, then
   min-max scale the whole volume to [0, 1] (the mean is subtracted from every voxel, so the
   background, 0 before, is the volume minimum and maps to 0; min-max scaling is shift-invariant,
   hence this equals min-max scaling of each modality) -- or ``"zscore"`` -- per modality
   ``(x - mean) / std`` over brain voxels, 0 outside the brain.

Crop-level transforms (MONAI dictionary transforms on ``{"image": (4, z, y, x), "label": (1, z, y, x)}``):
:func:`train_transforms` (pad, tumour-biased random crop, flips, small affine, intensity
scale/shift, gamma, noise) and :func:`valid_transforms` (pad, centre crop). Crop sizes are
``(z, y, x)``: :data:`FUSION_CROP` = (64, 80, 80) for stages 1-2 and :data:`SEGMENTATION_CROP` =
(64, 160, 160) for stage 3 -- the paper's 80 x 80 x 64 and 160 x 160 x 64 (in-plane x slices).

Arrays are ``(z, y, x)`` (channel first where there is a channel); geometry ``(x, y, z)``, mm, LPS.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    Randomizable,
    SpatialCrop,
    SpatialPadd,
    ThresholdIntensityd,
)

from nslfcore.data.case import Case, Geometry
from nslfcore.data.labels import ET

#: Crop sizes (z, y, x) of the paper: fusion stages 1-2 and segmentation stage 3.
FUSION_CROP: tuple[int, int, int] = (64, 80, 80)
SEGMENTATION_CROP: tuple[int, int, int] = (64, 160, 160)
NORMALIZATIONS: tuple[str, ...] = ("robust", "paper", "zscore")
#: The default: the paper's min-max, blind to isolated extreme voxels (see :func:`normalize`).
DEFAULT_NORMALIZATION = "robust"
#: ``"robust"``: brain percentiles that bound the normal range, and how far beyond it (in units of
#: that range) a voxel must lie to count as an outlier.
OUTLIER_PERCENTILES: tuple[float, float] = (0.01, 99.99)
OUTLIER_MARGIN = 0.5


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Boolean brain mask ``(z, y, x)`` of a ``(C, z, y, x)`` stack: any modality > 0."""
    return np.any(np.asarray(image) > 0, axis=0)


def _outliers(channel: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Brain voxels of ``channel`` beyond :data:`OUTLIER_PERCENTILES` by more than :data:`OUTLIER_MARGIN` x the range,
    or ``None``.

    ``values`` are ``channel[mask]``; the 3-D mask is built only when an outlier exists.
    """
    if values.size < 100:
        return None
    sample = values[:: max(1, values.size // 262_144)]  # a regular subsample: the bounds need no exact percentile
    low, high = np.percentile(sample, OUTLIER_PERCENTILES)
    margin = OUTLIER_MARGIN * float(high - low)
    above, below = np.float32(high + margin), np.float32(low - margin)
    if values.max() <= above and values.min() >= below:
        return None
    return mask & ((channel > above) | (channel < below))


def normalize(image: np.ndarray, mask: np.ndarray, method: str = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Normalise each modality of ``image`` ``(C, z, y, x)`` using brain voxels ``mask`` ``(z, y, x)``.

    ``"paper"``: ``x - mean(x[brain])``, then ``(x - min) / (max - min)`` over the whole volume
    -> [0, 1] (background -> 0). ``"robust"`` (default): the same, except that isolated extreme
    brain voxels (beyond the brain's 0.01-99.99th percentile range by more than half that range:
    a hot pixel, a 32767 spike, a reconstruction artefact) take no part in the mean, min and max
    and are clipped to [0, 1] afterwards; on a volume without such voxels it equals ``"paper"``
    exactly, so models trained with either agree. ``"zscore"``: ``(x - mean) / std`` over brain
    voxels, 0 outside. A constant modality becomes all zeros. Returns float32 of the same shape.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization {method!r} is unknown; use one of {NORMALIZATIONS}.")
    out = np.empty(image.shape, dtype=np.float32)
    any_brain = bool(mask.any())
    for c, channel in enumerate(np.asarray(image, dtype=np.float32)):
        values = channel[mask] if any_brain else channel.ravel()
        outliers = _outliers(channel, mask, values) if method == "robust" and any_brain else None
        if outliers is not None:
            values = channel[mask & ~outliers]
        mean = float(values.mean(dtype=np.float64)) if values.size else 0.0
        if method in ("paper", "robust"):
            shifted = channel - np.float32(mean)
            kept = shifted if outliers is None else shifted[~outliers]
            low, high = float(kept.min()), float(kept.max())
            out[c] = (shifted - low) / (high - low) if high > low else 0.0
            if outliers is not None:
                np.clip(out[c], 0.0, 1.0, out=out[c])
        else:
            std = float(values.std(dtype=np.float64)) if values.size else 0.0
            out[c] = np.where(mask, (channel - np.float32(mean)) / np.float32(std if std > 0 else 1.0), 0.0)
    return out


def brain_bbox(mask: np.ndarray, margin: int = 0) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(start, stop)`` voxel indices ``(z, y, x)`` of the mask's bounding box grown by ``margin`` voxels (clipped)."""
    if not mask.any():
        return (0, 0, 0), tuple(int(s) for s in mask.shape)  # type: ignore[return-value]
    start, stop = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        start.append(max(0, int(hits[0]) - margin))
        stop.append(min(mask.shape[axis], int(hits[-1]) + 1 + margin))
    return tuple(start), tuple(stop)  # type: ignore[return-value]


@dataclass(frozen=True)
class CropRecord:
    """Where a cropped volume lies in its original grid, so the crop can be inverted.

    Attributes:
        geometry: the original grid (``(x, y, z)`` sizes, mm, LPS).
        start: first voxel of the box, ``(z, y, x)``.
        shape: box shape ``(z, y, x)``.
    """

    geometry: Geometry
    start: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index of the box in a ``(z, y, x)`` array of the original grid."""
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.shape))  # type: ignore[return-value]

    @property
    def cropped_geometry(self) -> Geometry:
        """The grid of the cropped volume (same spacing and direction, shifted origin)."""
        return self.geometry.cropped(self.start, self.shape)

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Crop ``(..., z, y, x)`` on the original grid to the box."""
        return array[(Ellipsis, *self.slices)]

    def uncrop(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """Paste a box-shaped ``(..., z, y, x)`` array back onto the original grid, ``fill`` elsewhere."""
        if tuple(array.shape[-3:]) != tuple(self.shape):
            raise ValueError(f"array shape {array.shape[-3:]} does not match the crop box {self.shape} (z, y, x).")
        out = np.full((*array.shape[:-3], *self.geometry.shape), fill, dtype=array.dtype)
        out[(Ellipsis, *self.slices)] = array
        return out

    def to_dict(self) -> dict[str, Any]:
        g = self.geometry
        return {
            "size": list(g.size), "spacing": list(g.spacing), "origin": list(g.origin),
            "direction": [list(r) for r in g.direction], "start": list(self.start), "shape": list(self.shape),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CropRecord:
        geometry = Geometry(
            tuple(d["size"]), tuple(d["spacing"]), tuple(d["origin"]), tuple(tuple(r) for r in d["direction"])  # type: ignore[arg-type]
        )
        return cls(geometry, tuple(d["start"]), tuple(d["shape"]))


@dataclass
class PreprocessedCase:
    """A case cropped to its brain and normalised.

    Attributes:
        name: case name.
        image: float32 ``(4, z, y, x)`` in :data:`nslfcore.MODALITIES` order, on ``record.cropped_geometry``.
        label: uint8 internal labels ``(z, y, x)`` or ``None``.
        record: how to paste results back onto the original grid.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    record: CropRecord


def preprocess_case(case: Case, normalization: str = DEFAULT_NORMALIZATION, margin: int = 0) -> PreprocessedCase:
    """Brain mask -> crop to the brain box (+ ``margin`` voxels) -> normalise; see the module docstring."""
    stack = case.stacked()
    mask = brain_mask(stack)
    start, stop = brain_bbox(mask, margin)
    record = CropRecord(case.geometry, start, tuple(b - a for a, b in zip(start, stop)))  # type: ignore[arg-type]
    image = normalize(record.crop(stack), record.crop(mask), normalization)
    label = None if case.label is None else np.ascontiguousarray(record.crop(case.label)).astype(np.uint8)
    return PreprocessedCase(case.name, np.ascontiguousarray(image), label, record)


# ------------------------------------------------------------------------------ crop transforms
class RandTumourCropd(Randomizable, MapTransform):
    """Random crop of ``roi_size`` (z, y, x) centred on a tumour voxel with probability ``tumour_fraction``.

    With probability ``et_fraction`` (a share of all crops, counted within ``tumour_fraction``
    when that is larger) the centre is an enhancing-tumour voxel (label 3), so that the smallest
    class is seen in a guaranteed share of crops; a case without ET falls back to any tumour voxel.
    ``et_fraction=0`` draws the same random numbers as before it existed. Otherwise the centre
    is a random brain voxel (``image`` > 0 in any channel) outside the
    tumour. Centres are shifted inwards as needed so the crop lies inside the volume (pad first,
    e.g. with :class:`monai.transforms.SpatialPadd`). Writes the centre used, ``(z, y, x)``, to
    ``data["crop_center"]`` and whether it was a tumour-centred crop to ``data["tumour_crop"]``.
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image", "label"),
        roi_size: Sequence[int] = FUSION_CROP,
        tumour_fraction: float = 0.5,
        label_key: str = "label",
        image_key: str = "image",
        et_fraction: float = 0.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        if not 0.0 <= tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction {tumour_fraction} must lie in [0, 1].")
        if not 0.0 <= et_fraction <= 1.0:
            raise ValueError(f"et_fraction {et_fraction} must lie in [0, 1].")
        self.et_fraction = float(et_fraction)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.tumour_fraction = float(tumour_fraction)
        self.label_key, self.image_key = label_key, image_key
        self._center: tuple[int, int, int] = (0, 0, 0)
        self._tumour = False

    def _pick(self, candidates: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int]:
        flat = candidates[self.R.randint(len(candidates))]
        return tuple(int(v) for v in np.unravel_index(flat, shape))  # type: ignore[return-value]

    def randomize(self, data: Mapping[Hashable, Any]) -> None:
        label = np.asarray(data[self.label_key])[0] if self.label_key in data else None
        image = np.asarray(data[self.image_key])
        shape = image.shape[1:]
        draw = self.R.rand()
        want_tumour = draw < max(self.tumour_fraction, self.et_fraction)
        tumour = np.empty(0, dtype=np.int64)
        if label is not None and draw < self.et_fraction:
            tumour = np.flatnonzero(label == ET)  # empty without ET: any tumour voxel below
        if label is not None and want_tumour and not len(tumour):
            tumour = np.flatnonzero(label)
        self._tumour = bool(len(tumour))
        center: tuple[int, ...] | None = None
        if self._tumour:
            center = self._pick(tumour, shape)
        else:
            for _ in range(64):  # rejection sampling: the brain fills most of a brain-box crop
                candidate = tuple(int(self.R.randint(n)) for n in shape)
                if image[(slice(None),) + candidate].max() > 0 and (label is None or label[candidate] == 0):
                    center = candidate
                    break
            if center is None:
                brain = np.any(image > 0, axis=0)
                if label is not None:
                    brain &= label == 0
                pool = np.flatnonzero(brain)
                center = self._pick(pool, shape) if len(pool) else tuple(n // 2 for n in shape)
        half = [r // 2 for r in self.roi_size]
        self._center = tuple(  # type: ignore[assignment]
            int(min(max(c, h), n - (r - h))) for c, h, r, n in zip(center, half, self.roi_size, shape)
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(d)
        start = [c - r // 2 for c, r in zip(self._center, self.roi_size)]
        cropper = SpatialCrop(roi_start=start, roi_end=[s + r for s, r in zip(start, self.roi_size)])
        for key in self.key_iterator(d):
            d[key] = cropper(d[key])
        d["crop_center"] = self._center
        d["tumour_crop"] = self._tumour
        return d


def valid_transforms(crop_size: Sequence[int] = FUSION_CROP) -> Compose:
    """Deterministic crop: pad to at least ``crop_size`` (z, y, x), then crop the centre."""
    keys = ["image", "label"]
    return Compose(
        [
            SpatialPadd(keys, spatial_size=crop_size, allow_missing_keys=True),
            CenterSpatialCropd(keys, roi_size=crop_size, allow_missing_keys=True),
        ]
    )


def train_transforms(
    crop_size: Sequence[int] = FUSION_CROP,
    tumour_fraction: float = 0.5,
    augment: bool | str = True,
    clip_to_unit: bool = True,
    et_fraction: float = 0.0,
    sequence_dropout: float = 0.0,
) -> Compose:
    """Random training crop of ``crop_size`` (z, y, x) and augmentations (MONAI dictionary transforms).

    Steps: pad to ``crop_size``; :class:`RandTumourCropd` (``tumour_fraction``, ``et_fraction``);
    the augmentation level ``augment`` (``"none"``, ``"light"``, ``"strong"``; ``True`` is
    ``"light"``, ``False`` ``"none"``; see :mod:`nslfcore.data.augmentation`); if ``clip_to_unit``
    (for ``"paper"``/``"robust"`` normalisation): clip the image to [0, 1]; then, with probability
    ``sequence_dropout``, one modality set to zeros (:class:`~nslfcore.data.augmentation.RandDropSequenced`).
    """
    from nslfcore.data.augmentation import RandDropSequenced, augmentation_transforms

    keys = ["image", "label"]
    level = ("light" if augment else "none") if isinstance(augment, bool) else augment
    steps: list[Any] = [
        SpatialPadd(keys, spatial_size=crop_size, allow_missing_keys=True),
        RandTumourCropd(keys, roi_size=crop_size, tumour_fraction=tumour_fraction, et_fraction=et_fraction),
        *augmentation_transforms(level, keys),
    ]
    if clip_to_unit:
        steps += [
            ThresholdIntensityd("image", threshold=0.0, above=True, cval=0.0),
            ThresholdIntensityd("image", threshold=1.0, above=False, cval=1.0),
        ]
    if sequence_dropout > 0:
        steps.append(RandDropSequenced("image", sequence_dropout))
    return Compose(steps)
