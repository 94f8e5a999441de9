"""The inputs of inference: a :class:`~nslfcore.data.case.Case`, four files, or one case folder, checked.

Any three of the four sequences are enough (issue 31): the missing one is left out of the
:class:`Case` (:attr:`Case.missing`), becomes an all-zero channel after normalisation and gets no
fusion weight (:mod:`nslfcore.inference.missing`). Fewer than three are refused with one sentence
naming what is missing.

Arrays are numpy ``(z, y, x)`` (SimpleITK order); the geometry is the input's (ITK ``(x, y, z)``
mm, LPS).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore import MODALITIES
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.io import missing_file_reason
from nslfcore.data.validation import DataValidationError, plausibility_problems
from nslfcore.inference.missing import MIN_SEQUENCES, too_few_sequences
from nslfcore.preprocess.detection import DIFFERENT_GRIDS, preprocessing_advice, preprocessing_reasons, read_grids

GRID_MISMATCH = "; resample it onto the "
"""The tail of :func:`nslfcore.data.validation.inspect_case`'s grid-mismatch messages."""

Source = Case | Mapping[str, str | Path] | Mapping[str, sitk.Image] | str | Path
"""What inference reads: a case, ``{modality: file}``, a case folder; or, for preprocessing only,
``{modality: SimpleITK image}`` (a raw exam's sequences as read, :func:`nslfcore.preprocess.pipeline.read_exam`)."""


def check_case(case: Case) -> None:
    """Raise :class:`DataValidationError` unless ``case`` has three or four finite volumes on its grid."""
    problems = []
    if len(MODALITIES) - len(case.missing) < MIN_SEQUENCES:
        problems.append(too_few_sequences(case.name, case.missing, "volume"))
    for modality in MODALITIES:
        if modality not in case.images:
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
        problems = plausibility_problems(case.name, {m: np.asarray(case.images[m]) for m in MODALITIES if m in case.images})
    if problems:
        raise DataValidationError(problems)


def load_inputs(files: CaseFiles) -> Case:
    """Read and check the image files of one case (labels are not read); one of the four may lack a file.

    Raises :class:`DataValidationError`: one sentence when more than one sequence has no file, one
    sentence naming ``--preprocess`` when the files lie on different grids (a raw exam,
    :func:`nslfcore.preprocess.detection.preprocessing_advice`), else one line per problem of the
    files (see :func:`nslfcore.data.brats.load_case`).
    """
    if len(MODALITIES) - len(files.missing) < MIN_SEQUENCES:
        raise DataValidationError([too_few_sequences(files.name, files.missing, "file")])
    try:
        return load_case(dataclasses.replace(files, label=None), missing_ok=True)
    except DataValidationError as error:
        # Only grid mismatches (every file readable and 3-D): a raw exam, said in one sentence naming --preprocess.
        if error.problems and all(GRID_MISMATCH in problem for problem in error.problems):
            reasons = preprocessing_reasons(read_grids(files.images))
            advice = preprocessing_advice(reasons, files.name) if reasons and reasons[0] == DIFFERENT_GRIDS else None
            if advice is not None:
                raise DataValidationError([advice]) from None
        raise


def raw_exam_advice(case: Case) -> str | None:
    """One sentence when a loaded case still looks raw (thick or oblique voxels, a head with its skull on the
    T1ce or first sequence) and ``--preprocess`` would help, else ``None`` (see :mod:`nslfcore.preprocess.detection`)."""
    first = "t1ce" if "t1ce" in case.images else next(iter(case.images))
    reasons = preprocessing_reasons({first: case.geometry}, head=case.geometry.to_image(np.asarray(case.images[first])))
    return preprocessing_advice(reasons, case.name)


def as_case(source: Source) -> Case:
    """A checked :class:`Case` from a Case, ``{modality: path}`` for three or four modalities, or one case folder.

    Files are checked by :mod:`nslfcore.data.validation` (missing or unreadable files, geometry
    mismatch, NaN/Inf, 2-D/4-D images); any problem raises
    :class:`~nslfcore.data.validation.DataValidationError` with one line per problem. Labels are
    not read. A modality left out (a mapping without it or with ``None``, a folder without its
    file) is :attr:`Case.missing`; more than one left out is refused.
    """
    if isinstance(source, Case):
        check_case(source)
        return source
    if isinstance(source, Mapping):
        if any(isinstance(v, sitk.Image) for v in source.values()):
            raise TypeError("SimpleITK images are inputs of preprocessing only; pass files, a case folder or a Case "
                            "(or preprocess=True).")  # fmt: skip
        paths = {m: Path(source[m]) for m in MODALITIES if source.get(m) is not None}  # type: ignore[arg-type]
        missing = [m for m in MODALITIES if m not in paths]
        if len(paths) < MIN_SEQUENCES:
            raise DataValidationError([too_few_sequences("The inputs", missing)])
        absent = [f"{missing_file_reason(paths[m])} (the {m} input)." for m in paths
                  if not (paths[m].is_file() and os.access(paths[m], os.R_OK))]  # fmt: skip
        if absent:
            raise DataValidationError(absent)
        first = next(iter(paths.values()))
        return load_inputs(CaseFiles(name=paths.get("t1", first).name.split(".")[0], images=paths))
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a case folder; give a BraTS-layout case folder or four files.")
    cases = find_cases(folder)
    if len(cases) != 1:
        raise ValueError(f"{folder} holds {len(cases)} cases; give the folder of one case (its t1, t1ce, t2 and flair files).")
    return load_inputs(cases[0])
