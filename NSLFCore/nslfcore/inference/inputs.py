"""The inputs of inference: a :class:`~nslfcore.data.case.Case`, four files, or one case folder, checked.

Arrays are numpy ``(z, y, x)`` (SimpleITK order); the geometry is the input's (ITK ``(x, y, z)``
mm, LPS).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.io import missing_file_reason
from nslfcore.data.validation import DataValidationError, plausibility_problems

Source = Case | Mapping[str, str | Path] | str | Path


def check_case(case: Case) -> None:
    """Raise :class:`DataValidationError` unless ``case`` has four finite volumes on its grid."""
    problems = []
    for modality in MODALITIES:
        if modality not in case.images:
            problems.append(f"{case.name}: no {modality} volume; give all four modalities ({', '.join(MODALITIES)}).")
            continue
        array = np.asarray(case.images[modality])
        if array.shape != case.geometry.shape:
            problems.append(
                f"{case.name}: the {modality} volume has shape {array.shape} but the case grid is "
                f"{case.geometry.shape} (z, y, x); resample it onto the case grid."
            )
        elif np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            problems.append(f"{case.name}: the {modality} volume has NaN or infinite voxels; clean or mask it first.")
    if not problems:
        problems = plausibility_problems(case.name, {m: np.asarray(case.images[m]) for m in MODALITIES})
    if problems:
        raise DataValidationError(problems)


def as_case(source: Source) -> Case:
    """A checked :class:`Case` from a Case, ``{modality: path}`` for the four modalities, or one case folder.

    Files are checked by :mod:`nslfcore.data.validation` (missing or unreadable files, geometry
    mismatch, NaN/Inf, 2-D/4-D images); any problem raises
    :class:`~nslfcore.data.validation.DataValidationError` with one line per problem. Labels are
    not read.
    """
    if isinstance(source, Case):
        check_case(source)
        return source
    if isinstance(source, Mapping):
        missing = [m for m in MODALITIES if m not in source]
        if missing:
            raise ValueError(f"Missing input modalities {missing}; give t1, t1ce, t2 and flair.")
        paths = {m: Path(source[m]) for m in MODALITIES}
        absent = [f"{missing_file_reason(paths[m])} (the {m} input)." for m in MODALITIES
                  if not (paths[m].is_file() and os.access(paths[m], os.R_OK))]  # fmt: skip
        if absent:
            raise DataValidationError(absent)
        return load_case(CaseFiles(name=paths["t1"].name.split(".")[0], images=paths))
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a case folder; give a BraTS-layout case folder or four files.")
    cases = find_cases(folder)
    if len(cases) != 1:
        raise ValueError(f"{folder} holds {len(cases)} cases; give the folder of one case (its t1, t1ce, t2 and flair files).")
    return load_case(dataclasses.replace(cases[0], label=None))
