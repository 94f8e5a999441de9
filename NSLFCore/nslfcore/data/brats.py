"""Finding BraTS-style cases in a folder, reading them, and splitting them.

Layouts recognised by :func:`find_cases`:

* BraTS 2021: ``<root>/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``
  (labels {0,1,2,4}, ET = 4);
* BraTS 2023+: ``<root>/<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (labels {0,1,2,3}, ET = 3);
* a plain folder: ``<root>`` itself (or each sub-folder) holds four images whose names contain
  one modality token each (``t1ce``/``t1c``/``t1gd`` before ``t1``/``t1n``/``t1w``;
  ``flair``/``t2f``; ``t2``/``t2w``) and optionally a ``seg``/``label`` file; label values are
  read as BraTS 2021 when a 4 occurs, else as BraTS 2023 (convention ``"auto"``).

Image files may be ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``. Volumes are
read with SimpleITK: arrays ``(z, y, x)``, geometry ``(x, y, z)``, mm, LPS (spacing, origin and
direction kept). Labels are mapped to the internal classes of :mod:`nslfcore.data.labels`.

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
from nslfcore.data.io import strip_suffix
from nslfcore.data.labels import to_internal
from nslfcore.data.validation import DataValidationError, inspect_case

#: File-name tokens per role, tried in this order (so ``t1ce`` wins over ``t1``, ``t2f`` is FLAIR).
ROLE_TOKENS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("seg", ("seg", "label", "labels", "segmentation")),
    ("t1ce", ("t1ce", "t1c", "t1gd", "t1post", "t1ce")),
    ("flair", ("flair", "t2f", "t2flair")),
    ("t2", ("t2", "t2w")),
    ("t1", ("t1", "t1n", "t1w")),
)
#: Tokens that only BraTS 2023+ uses.
BRATS2023_TOKENS = frozenset({"t1n", "t1c", "t2w", "t2f"})


def file_role(file_name: str, case_name: str = "") -> str | None:
    """The role (modality name or ``"seg"``) a file name denotes, or ``None``.

    Tokens (split at ``_ - .`` and spaces, case-insensitive, after removing the case-name prefix)
    are matched exactly first, the last token first; failing that, substrings in
    :data:`ROLE_TOKENS` order.
    """
    stem = strip_suffix(file_name)
    if stem is None:
        return None
    stem = stem.lower()
    if case_name and stem.startswith(case_name.lower()):
        stem = stem[len(case_name) :]
    tokens = [t for t in re.split(r"[_\-.\s]+", stem) if t]
    for token in reversed(tokens):
        for role, aliases in ROLE_TOKENS:
            if token in aliases:
                return role
    for role, aliases in ROLE_TOKENS:
        if any(alias in stem for alias in aliases):
            return role
    return None


def match_files(name: str, folder: Path) -> CaseFiles:
    """Match the image files directly inside ``folder`` to roles; the case is called ``name``."""
    found: dict[str, list[Path]] = {}
    styles: set[str] = set()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        role = file_role(path.name, name)
        if role is None:
            continue
        found.setdefault(role, []).append(path)
        stem = (strip_suffix(path.name) or "").lower()
        if stem.startswith(f"{name.lower()}-") and stem.rsplit("-", 1)[-1] in BRATS2023_TOKENS:
            styles.add("brats2023")
        elif stem.startswith(f"{name.lower()}_") and name.lower().startswith("brats20"):
            styles.add("brats2021")
    files = CaseFiles(name=name, images={})
    for role, paths in found.items():
        if len(paths) > 1:
            listed = ", ".join(p.name for p in paths)
            files.problems.append(f"{name}: several files look like {role} in {folder} ({listed}); keep one.")
        if role == "seg":
            files.label = paths[0]
        else:
            files.images[role] = paths[0]
    if len(styles) == 1:  # files named like the BraTS release; otherwise decide from the label values
        files.label_convention = styles.pop()
    return files


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and strip_suffix(p.name) is not None for p in folder.iterdir())


def find_cases(root: str | Path) -> list[CaseFiles]:
    """All cases under ``root`` (sorted by name), complete or not; see the module docstring for layouts.

    ``root`` itself is one case when it directly holds image files; otherwise each sub-folder
    holding image files is one case named after the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the folder that holds the cases.")
    if _has_images(root):
        return [match_files(root.name, root)]
    cases = [match_files(d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and _has_images(d)]
    return sorted(cases, key=lambda c: c.name)


def load_case(files: CaseFiles, require_label: bool = False) -> Case:
    """Read and check one case; raises :class:`~nslfcore.data.validation.DataValidationError` on any problem.

    Returns a :class:`Case` with float32 images ``(z, y, x)``, the label (if any) mapped to the
    internal classes (uint8), and the grid (``(x, y, z)``, mm, LPS) of the files.
    """
    inspection = inspect_case(files, require_label=require_label)
    if inspection.problems:
        raise DataValidationError(inspection.problems)
    assert inspection.geometry is not None
    images = {m: inspection.arrays[m].astype(np.float32, copy=False) for m in MODALITIES}
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
        raise ValueError(f"case {missing[0]} of the split ({len(missing)} missing in all) is not in the data folder; fix the list or the folder.")
    return [by_name[n] for n in names]
