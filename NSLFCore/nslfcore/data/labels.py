"""Label conventions: BraTS file labels <-> the internal training class indices.

Internal classes (the channel index of every segmentation output in nslfcore):

=====  ==========================================  ============  ============
index  meaning                                     BraTS 2021    BraTS 2023+
=====  ==========================================  ============  ============
0      background (and normal brain)               0             0
1      necrotic / non-enhancing tumour core (NCR)  1             1
2      peritumoural edema (ED)                     2             2
3      enhancing tumour (ET)                       4             3
=====  ==========================================  ============  ============

So BraTS 2021 files map ``4 -> 3`` (and back ``3 -> 4``); BraTS 2023+ files already use the
internal indices. Evaluated regions (internal indices): ET = {3}, TC = {1, 3}, WT = {1, 2, 3}.
They are nested (ET inside TC inside WT), so a label map and its three region masks determine each
other (:func:`regions_from_labels`, :func:`labels_from_regions`; the channels of a region-based FSD,
:data:`REGION_CHANNELS`).
Label arrays are voxel arrays of any axis order; these functions act voxel-wise.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

#: Internal class names by index.
CLASS_NAMES: tuple[str, str, str, str] = ("background", "NCR", "ED", "ET")
BACKGROUND, NCR, ED, ET = 0, 1, 2, 3

#: Label conventions of label files: ``"brats2021"`` ({0,1,2,4}), ``"brats2023"`` ({0,1,2,3}),
#: ``"auto"`` (either, decided from the values: a 4 means 2021).
LabelConvention = Literal["brats2021", "brats2023", "auto"]

#: Values allowed in a label file per convention.
FILE_LABELS: dict[str, frozenset[int]] = {
    "brats2021": frozenset({0, 1, 2, 4}),
    "brats2023": frozenset({0, 1, 2, 3}),
    "auto": frozenset({0, 1, 2, 3, 4}),
}

#: Evaluated regions as sets of internal class indices.
REGIONS: dict[str, tuple[int, ...]] = {"ET": (ET,), "TC": (NCR, ET), "WT": (NCR, ED, ET)}

#: The regions in the channel order of region masks and of a region-based FSD: outermost first.
REGION_CHANNELS: tuple[str, str, str] = ("WT", "TC", "ET")

#: The class of a voxel whose innermost region is the key (nnU-Net's BraTS ``regions_class_order``):
#: painting these in :data:`REGION_CHANNELS` order makes ET imply TC and TC imply WT.
REGION_LABELS: dict[str, int] = {"WT": ED, "TC": NCR, "ET": ET}


def brats2021_to_internal(label: np.ndarray) -> np.ndarray:
    """Map BraTS 2021 file labels {0,1,2,4} to internal classes {0,1,2,3} (uint8, same shape)."""
    out = np.asarray(label).astype(np.uint8, copy=True)
    out[out == 4] = ET
    return out


def internal_to_brats2021(label: np.ndarray) -> np.ndarray:
    """Map internal classes {0,1,2,3} to BraTS 2021 file labels {0,1,2,4} (uint8, same shape)."""
    out = np.asarray(label).astype(np.uint8, copy=True)
    out[out == ET] = 4
    return out


def brats2023_to_internal(label: np.ndarray) -> np.ndarray:
    """BraTS 2023+ file labels {0,1,2,3} are the internal classes; returns a uint8 copy."""
    return np.asarray(label).astype(np.uint8, copy=True)


def internal_to_brats2023(label: np.ndarray) -> np.ndarray:
    """Internal classes are BraTS 2023+ file labels; returns a uint8 copy."""
    return np.asarray(label).astype(np.uint8, copy=True)


def to_internal(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Map a label file's values to internal classes; ``"auto"`` treats any 4 as BraTS 2021 ET."""
    if convention == "brats2021" or (convention == "auto" and bool((np.asarray(label) == 4).any())):
        return brats2021_to_internal(label)
    return brats2023_to_internal(label)


def from_internal(label: np.ndarray, convention: Literal["brats2021", "brats2023"]) -> np.ndarray:
    """Map internal classes to a file convention (``"brats2021"`` writes ET as 4)."""
    return internal_to_brats2021(label) if convention == "brats2021" else internal_to_brats2023(label)


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of region ``"ET"``, ``"TC"`` or ``"WT"`` of an internal label array."""
    return np.isin(label, REGIONS[region])


def regions_from_labels(label: np.ndarray) -> np.ndarray:
    """Boolean masks ``(3, *label.shape)`` of the regions WT, TC, ET (:data:`REGION_CHANNELS`) of internal labels."""
    return np.stack([region_mask(label, region) for region in REGION_CHANNELS])


def labels_from_regions(regions: np.ndarray) -> np.ndarray:
    """Internal labels (uint8, ``regions.shape[1:]``) of region masks ``(3, ...)`` in :data:`REGION_CHANNELS` order.

    nnU-Net's BraTS rule: ED where WT, NCR where TC, ET where ET, each painted over the previous,
    so ET wins even where TC or WT is off (ET implies TC implies WT); background elsewhere. The
    inverse of :func:`regions_from_labels`.
    """
    regions = np.asarray(regions)
    labels = np.zeros(regions.shape[1:], dtype=np.uint8)
    for region, mask in zip(REGION_CHANNELS, regions):
        labels[mask.astype(bool)] = REGION_LABELS[region]
    return labels
