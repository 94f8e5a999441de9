"""Reading BraTS-style cases, and splitting them.

Cases are found by :mod:`nslfcore.data.discovery` (:func:`find_cases`, :func:`match_files`,
:func:`file_role` are re-exported here: BraTS 2021, BraTS 2023+ and plain-folder layouts).
Volumes are read with SimpleITK: arrays ``(z, y, x)``, geometry ``(x, y, z)``, mm, LPS (spacing,
origin and direction kept). Labels are mapped to the internal classes of :mod:`nslfcore.data.labels`.

Splits: :func:`read_split_lists` reads ``train.txt`` / ``valid.txt`` / ``test.txt`` (one case
name per line, like the authors' lists); :func:`seeded_split` makes a reproducible random split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.discovery import file_role, find_cases, match_files  # noqa: F401  (re-exported)
from nslfcore.data.io import strip_suffix
from nslfcore.data.labels import to_internal
from nslfcore.data.validation import DataValidationError, inspect_case


def load_case(files: CaseFiles, require_label: bool = False, missing_ok: bool = False) -> Case:
    """Read and check one case; raises :class:`~nslfcore.data.validation.DataValidationError` on any problem.

    Returns a :class:`Case` with float32 images ``(z, y, x)``, the label (if any) mapped to the
    internal classes (uint8), and the grid (``(x, y, z)``, mm, LPS) of the files. ``missing_ok``: a
    modality without a file is left out of the case (:attr:`Case.missing`) instead of refused.
    """
    inspection = inspect_case(files, require_label=require_label, missing_ok=missing_ok)
    if inspection.problems:
        raise DataValidationError(inspection.problems)
    if inspection.geometry is None:
        raise DataValidationError([f"{files.name}: no modality file found; add the t1, t1ce, t2 and flair volumes."])
    images = {m: inspection.arrays[m].astype(np.float32, copy=False) for m in MODALITIES if m in inspection.arrays}
    label = inspection.arrays.get("seg")
    if label is not None:
        label = to_internal(label, files.label_convention)  # type: ignore[arg-type]
    return Case(files.name, images, label, inspection.geometry, files.paths())


# ---------------------------------------------------------------------------------------- splits
SPLIT_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train.txt", "training.txt"),
    "valid": ("valid.txt", "val.txt", "validation.txt"),
    "test": ("test.txt", "testing.txt"),
}


def read_case_list(path: str | Path) -> list[str]:
    """Case names in a list file: one per line; blank lines and ``#`` comments skipped; paths reduced to their last part."""
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip().rstrip("/\\")
        if line:
            last = re.split(r"[/\\]", line)[-1]
            names.append(strip_suffix(last) or last)
    return names


def read_split_lists(folder: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` from the list files in ``folder`` (missing lists are omitted)."""
    folder = Path(folder)
    split = {}
    for part, candidates in SPLIT_FILE_NAMES.items():
        for candidate in candidates:
            if (folder / candidate).is_file():
                split[part] = read_case_list(folder / candidate)
                break
    if not split:
        raise FileNotFoundError(f"{folder} has no train.txt, valid.txt or test.txt; add the split lists there.")
    return split


def seeded_split(
    names: Iterable[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[str]]:
    """A reproducible random split of ``names`` into ``train``/``valid``/``test`` by ``fractions``.

    Counts are rounded (valid and test get at least one case each when their fraction is positive
    and there are enough cases); the result depends only on the sorted names, fractions and seed.
    """
    ordered = sorted(names)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions {tuple(fractions)} must be three non-negative numbers (train, valid, test).")
    total = float(sum(fractions))
    order = np.random.default_rng(seed).permutation(len(ordered))
    n = len(ordered)
    n_valid = int(round(n * fractions[1] / total))
    n_test = int(round(n * fractions[2] / total))
    if fractions[1] > 0 and n >= 3:
        n_valid = max(n_valid, 1)
    if fractions[2] > 0 and n >= 3:
        n_test = max(n_test, 1)
    n_train = max(0, n - n_valid - n_test)
    picked = [ordered[i] for i in order]
    return {
        "train": sorted(picked[:n_train]),
        "valid": sorted(picked[n_train : n_train + n_valid]),
        "test": sorted(picked[n_train + n_valid :]),
    }


def select_cases(cases: Sequence[CaseFiles], names: Sequence[str]) -> list[CaseFiles]:
    """The cases called ``names`` (in that order); raises ``ValueError`` naming the first absent case."""
    by_name = {c.name: c for c in cases}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"case {missing[0]} of the split ({len(missing)} missing in all) is not in the data folder;"
            " fix the list or the folder."
        )
    return [by_name[n] for n in names]
