"""Finding BraTS-style cases in a folder: which file of a case folder is which modality.

Layouts recognised by :func:`find_cases`:

* BraTS 2021: ``<root>/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``
  (labels {0,1,2,4}, ET = 4);
* BraTS 2023+: ``<root>/<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (labels {0,1,2,3}, ET = 3);
* a plain folder: ``<root>`` itself (or each sub-folder) holds four images whose names denote one
  modality each, and optionally a segmentation file, by the rule of
  :func:`nslfcore.data.modality_names.modality_of`; label values are read as BraTS 2021 when a 4
  occurs, else as BraTS 2023 (convention ``"auto"``).

Image files may be ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``
(:data:`nslfcore.data.io.IMAGE_SUFFIXES`). Nothing is read here: :mod:`nslfcore.data.validation`
checks the files and :func:`nslfcore.data.brats.load_case` reads them.
"""

from __future__ import annotations

from pathlib import Path

from nslfcore.data.case import CaseFiles
from nslfcore.data.io import strip_suffix
from nslfcore.data.modality_names import BRATS2023_SUFFIXES, SEGMENTATION, modality_of


def file_role(file_name: str, case_name: str = "") -> str | None:
    """The role (modality name or ``"seg"``) an image file name denotes, or ``None`` (not an image file, or no role).

    The case-name prefix, if ``file_name`` starts with it, is left out of the match.
    """
    stem = strip_suffix(file_name)
    if stem is None:
        return None
    if case_name and stem.lower().startswith(case_name.lower()):
        stem = stem[len(case_name) :]
    return modality_of(stem)


def match_files(name: str, folder: Path) -> CaseFiles:
    """Match the image files directly inside ``folder`` to roles; the case is called ``name``."""
    found: dict[str, list[Path]] = {}
    styles: set[str] = set()
    brats2023 = set(BRATS2023_SUFFIXES.values()) - {SEGMENTATION}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        role = file_role(path.name, name)
        if role is None:
            continue
        found.setdefault(role, []).append(path)
        stem = (strip_suffix(path.name) or "").lower()
        if stem.startswith(f"{name.lower()}-") and stem.rsplit("-", 1)[-1] in brats2023:
            styles.add("brats2023")
        elif stem.startswith(f"{name.lower()}_") and name.lower().startswith("brats20"):
            styles.add("brats2021")
    files = CaseFiles(name=name, images={})
    for role, paths in found.items():
        if len(paths) > 1:
            listed = ", ".join(p.name for p in paths)
            files.problems.append(f"{name}: several files look like {role} in {folder} ({listed}); keep one.")
        if role == SEGMENTATION:
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
