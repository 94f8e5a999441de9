"""Data layer of nslfcore: files -> :class:`Case` -> preprocessing -> training crops; phantoms.

Modules (one job each):

* :mod:`~nslfcore.data.case` -- :class:`Case`, :class:`Geometry`, :class:`CaseFiles`;
* :mod:`~nslfcore.data.labels` -- BraTS 2021 / 2023 label mappings and regions;
* :mod:`~nslfcore.data.io` -- reading/writing one volume with SimpleITK;
* :mod:`~nslfcore.data.modality_names` -- which modality a file or node name denotes (standard library only);
* :mod:`~nslfcore.data.discovery` -- finding cases (BraTS 2021, 2023+, plain folders) in a folder;
* :mod:`~nslfcore.data.brats` -- reading cases, splits;
* :mod:`~nslfcore.data.validation` -- checks with one-line messages, folder reports;
* :mod:`~nslfcore.data.transforms` -- normalisation, brain crop (invertible), MONAI crop/augment pipelines;
* :mod:`~nslfcore.data.cache` -- preprocessed cases in memory and on disk;
* :mod:`~nslfcore.data.dataset` -- :class:`BratsCropDataset`;
* :mod:`~nslfcore.data.phantom` (+ ``phantom_*``) -- BraTS-like synthetic cases.

Arrays are ``(z, y, x)`` (SimpleITK order); geometry ``(x, y, z)``, mm, LPS.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names, imported on first use so that e.g. ``nslfcore.data.phantom`` does not pull in MONAI.
_EXPORTS: dict[str, str] = {
    "find_cases": "discovery", "load_case": "brats", "read_split_lists": "brats", "seeded_split": "brats",
    "select_cases": "brats", "CaseCache": "cache", "Case": "case", "CaseFiles": "case", "Geometry": "case",
    "BratsCropDataset": "dataset", "REGIONS": "labels", "brats2021_to_internal": "labels",
    "internal_to_brats2021": "labels", "to_internal": "labels", "modality_of": "modality_names", "FUSION_CROP": "transforms",
    "SEGMENTATION_CROP": "transforms", "CropRecord": "transforms", "preprocess_case": "transforms",
    "DataValidationError": "validation", "check_folder": "validation", "validate_case": "validation",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"nslfcore.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'nslfcore.data' has no attribute {name!r}")
