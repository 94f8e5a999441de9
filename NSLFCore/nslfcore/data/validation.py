"""Checks that a case's files can be used, before anything runs.

Every problem is one line naming the case and the file, and saying what to do. Checked:

* a missing modality file, or a missing label file when labels are required;
* a file that cannot be read (corrupt, unknown format; NIfTI files are also read with nibabel,
  which catches truncated ``.nii.gz`` files and NaNs that SimpleITK's reader hides);
* an image that is not one 3-D scalar volume (2-D, 4-D, vector images);
* modalities (and the label) on different grids: the size must be equal; spacing and origin
  may differ by at most :data:`SPACING_TOLERANCE_MM` / :data:`ORIGIN_TOLERANCE_MM` (1e-3 mm)
  per component, direction cosines by at most :data:`DIRECTION_TOLERANCE` (1e-4, unit-less,
  per matrix element);
* label values outside the set of the case's label convention (see :mod:`nslfcore.data.labels`);
* an all-zero modality;
* NaN or infinite voxels.

Geometry is compared in SimpleITK terms: ``(x, y, z)`` order, mm, LPS.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.case import CaseFiles, Geometry
from nslfcore.data.discovery import find_cases
from nslfcore.data.io import read_image
from nslfcore.data.labels import FILE_LABELS
from nslfcore.errors import NSLFError

SPACING_TOLERANCE_MM = 1e-3
ORIGIN_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4


class DataValidationError(NSLFError, ValueError):
    """A case cannot be used; ``str(error)`` has one line per problem, ``error.problems`` lists them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _fmt(values: tuple) -> str:
    flat = [v for row in values for v in row] if values and isinstance(values[0], tuple) else list(values)
    return "(" + ", ".join(f"{v:g}" for v in flat) + ")"


def geometry_differences(reference: Geometry, other: Geometry) -> list[str]:
    """Names of the attributes (``size``, ``spacing``, ``origin``, ``direction``) that differ beyond tolerance."""
    out = []
    if tuple(reference.size) != tuple(other.size):
        out.append("size")
    if not np.allclose(reference.spacing, other.spacing, rtol=0, atol=SPACING_TOLERANCE_MM):
        out.append("spacing")
    if not np.allclose(reference.origin, other.origin, rtol=0, atol=ORIGIN_TOLERANCE_MM):
        out.append("origin")
    if not np.allclose(reference.direction, other.direction, rtol=0, atol=DIRECTION_TOLERANCE):
        out.append("direction")
    return out


def _nifti_check(path: Path) -> tuple[str | None, int]:
    """Read a NIfTI file's stored voxels with nibabel: (read error or None, number of NaN/Inf values).

    SimpleITK's NIfTI reader silently accepts truncated ``.nii.gz`` files and turns stored NaNs
    into 0, so NIfTI files are also read raw here. nibabel is imported here, not at module level:
    3D Slicer does not bundle it, and the Slicer module checks datasets before its dependency step;
    without nibabel a ``.nii.gz`` file's gzip stream is still read to its end (a truncated file is
    reported), and stored NaNs are left to the voxel check.
    """
    try:
        import nibabel as nib
    except ImportError:
        return _gzip_check(path), 0

    try:
        image = nib.load(str(path))
        raw = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]
    except Exception as error:  # nibabel raises several types for damaged files
        return (str(error).strip().splitlines() or ["unknown error"])[-1][:100], 0
    if np.issubdtype(raw.dtype, np.floating):
        return None, int(raw.size - np.isfinite(raw).sum())
    return None, 0


def _gzip_check(path: Path) -> str | None:
    """A ``.gz`` file read to its end: the error (truncated or corrupt stream) or ``None``; other files: ``None``."""
    if not path.name.endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError) as error:
        return (str(error).strip().splitlines() or ["unknown error"])[-1][:100]
    return None


def _voxel_problems(case: str, role: str, path: Path, array: np.ndarray, convention: str, nonfinite: int = 0) -> list[str]:
    problems = []
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else None
    nonfinite = max(nonfinite, 0 if finite is None else int(array.size - finite.sum()))
    if nonfinite:
        problems.append(f"{case}: {path} has {nonfinite} NaN or infinite voxels; re-export the {role} volume.")
    if role == "seg":
        values = np.unique(array[finite] if finite is not None else array)
        allowed = FILE_LABELS[convention]
        bad = [v for v in values.tolist() if float(v) != int(v) or int(v) not in allowed]
        if bad:
            shown = ", ".join(f"{v:g}" for v in bad[:5])
            problems.append(
                f"{case}: {path} has label values {{{shown}}} outside {sorted(allowed)} ({convention}); fix the segmentation."
            )
    elif not np.any(array):
        problems.append(f"{case}: {path} is all zero; replace the {role} volume.")
    return problems


#: The most voxels one volume may declare before it is read (a BraTS volume has 8.9 M; 512^3 is 134 M).
MAX_VOXELS = 512**3


def available_ram_bytes() -> int:
    """Available RAM in bytes: ``MemAvailable`` on Linux, psutil elsewhere (Slicer ships it), else 16 GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 16 * 1024**3


def header_problem(case: str, path: Path) -> str | None:
    """Read only the header of ``path``: a declared size that cannot be a brain MR volume, or will not fit in memory.

    Checked before any voxel is read, so a 1 KB file declaring 1000^3 voxels costs nothing.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # unreadable: the full read reports why
    size = reader.GetSize()
    voxels = int(np.prod(size, dtype=np.int64)) * max(1, reader.GetNumberOfComponents())
    need = voxels * 4 * 3  # float32 working copies while reading and checking
    if voxels > MAX_VOXELS or need > available_ram_bytes():
        shown = " x ".join(str(v) for v in size)
        return (f"{case}: {path} declares {shown} voxels ({need / 1024**3:.1f} GB to read), more than a brain MR volume "
                "has or this machine can hold; check the file (a damaged header?) or crop it.")  # fmt: skip
    return None


def looks_like_labels(array: np.ndarray) -> bool:
    """Whether a volume given as an MR modality is in fact a label map (integers, at most 5 values, all in 0-4)."""
    if array.size == 0 or (np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array[::7], 1) == 0)):
        return False
    values = np.unique(array[:: max(1, array.size // 2_000_000)])
    return 2 <= values.size <= 5 and values.min() >= 0 and values.max() <= 4


def plausibility_problems(case: str, arrays: dict[str, np.ndarray], paths: dict[str, Path] | None = None) -> list[str]:
    """A label map given as a modality, or two modalities that are the same image (``arrays`` by modality, ``(z, y, x)``)."""
    known: dict[str, Path] = paths or {}

    def name(m: str) -> str:
        return str(known[m]) if m in known else f"the {m} volume"

    present = [m for m in MODALITIES if m in arrays]
    problems = [f"{case}: {name(m)} looks like a label map (only the values {sorted(np.unique(arrays[m]).tolist())}), "
                f"not a {m} MR volume; give the {m} image." for m in present if looks_like_labels(arrays[m])]  # fmt: skip
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            same_file = a in known and b in known and known[a].resolve() == known[b].resolve()
            if same_file or (arrays[a].shape == arrays[b].shape and np.array_equal(arrays[a], arrays[b])):
                problems.append(f"{case}: {a} and {b} are the same image ({name(a)}{'' if same_file else ' and ' + name(b)}); "
                                "give four different modalities.")  # fmt: skip
    return problems


@dataclass
class CaseInspection:
    """What :func:`inspect_case` found: the problems, and the volumes it could read.

    ``arrays``: role (modality name or ``"seg"``) -> voxel array ``(z, y, x)`` as stored in the file;
    ``geometry``: the grid most readable modalities share (``(x, y, z)``, mm, LPS).
    """

    problems: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    geometry: Geometry | None = None
    missing: list[str] = field(default_factory=list)


def inspect_case(files: CaseFiles, require_label: bool = True, missing_ok: bool = False) -> CaseInspection:
    """Read every file of ``files`` and collect all problems (see the module docstring).

    ``missing_ok``: a modality without a file is not a problem (inference decides how many may
    lack one, :mod:`nslfcore.inference.inputs`); it stays in :attr:`CaseInspection.missing`.
    """
    problems = list(files.problems)
    missing = list(files.missing)
    for modality in [] if missing_ok else files.missing:
        problems.append(f"{files.name}: no {modality} file found; add the {modality} volume to the case folder.")
    if require_label and files.label is None:
        missing.append("seg")
        problems.append(f"{files.name}: no segmentation (seg) file found; add it or use the case without labels.")
    arrays: dict[str, np.ndarray] = {}
    geometries: dict[str, Geometry] = {}
    for role, path in files.paths().items():
        reason, nonfinite = None, 0
        too_big = header_problem(files.name, path)
        if too_big is not None:
            problems.append(too_big)
            continue
        try:
            array, geometry = read_image(path)
        except RuntimeError as error:
            lines = [line for line in str(error).splitlines() if "ERROR" in line] or str(error).splitlines() or ["?"]
            reason = re.sub(r'\s*(for\s*)?"[^"]*"', "", lines[-1].split("ERROR:")[-1]).strip()[:100]
        if reason is None and str(path).lower().endswith((".nii", ".nii.gz")):
            reason, nonfinite = _nifti_check(path)
        if reason is not None:
            problems.append(f"{files.name}: cannot read {path} ({reason}); replace the file.")
            continue
        if array.ndim != 3 or geometry.size == (0, 0, 0):
            problems.append(
                f"{files.name}: {path} is not a 3-D scalar image (array shape {array.shape}); provide one 3-D volume."
            )
            continue
        problems += _voxel_problems(files.name, role, path, array, files.label_convention, nonfinite)
        arrays[role] = array
        geometries[role] = geometry
    problems += plausibility_problems(files.name, arrays, files.paths())
    # the reference grid is the one most modalities share (ties: MODALITIES order), so the odd file is named
    modalities = [m for m in MODALITIES if m in geometries]
    votes = [sum(not geometry_differences(geometries[m], geometries[o]) for o in modalities) for m in modalities]
    reference_role = modalities[int(np.argmax(votes))] if modalities else None
    reference = geometries.get(reference_role) if reference_role else None
    if reference is not None:
        for role, geometry in geometries.items():
            for attribute in geometry_differences(reference, geometry):
                problems.append(
                    f"{files.name}: {files.paths()[role]} has {attribute} {_fmt(getattr(geometry, attribute))}"
                    f" but {reference_role} has {_fmt(getattr(reference, attribute))};"
                    f" resample it onto the {reference_role} grid."
                )
    return CaseInspection(problems=problems, arrays=arrays, geometry=reference, missing=missing)


def case_problems(files: CaseFiles, require_label: bool = True, missing_ok: bool = False) -> list[str]:
    """All problems of one case (empty when the case is usable; ``missing_ok`` as for :func:`inspect_case`)."""
    return inspect_case(files, require_label, missing_ok).problems


def validate_case(files: CaseFiles, require_label: bool = True) -> None:
    """Raise :class:`DataValidationError` listing every problem of ``files``; return if usable."""
    problems = case_problems(files, require_label)
    if problems:
        raise DataValidationError(problems)


@dataclass
class CaseStatus:
    """One row of a :class:`DataReport`: ``status`` is ``complete``, ``incomplete`` (files missing) or ``rejected``."""

    name: str
    status: str
    problems: list[str]


@dataclass
class DataReport:
    """Which cases of a folder are usable."""

    folder: Path
    cases: list[CaseStatus]

    def names(self, status: str) -> list[str]:
        """Case names with the given status."""
        return [c.name for c in self.cases if c.status == status]

    @property
    def usable(self) -> list[str]:
        """Names of the complete cases."""
        return self.names("complete")

    def table(self) -> str:
        """A plain-text table: one line per case, then the problems of incomplete and rejected cases."""
        width = max([len(c.name) for c in self.cases] + [4])
        lines = [f"{'case':<{width}}  status", f"{'-' * width}  ----------"]
        for case in self.cases:
            lines.append(f"{case.name:<{width}}  {case.status}")
        counts = ", ".join(f"{len(self.names(s))} {s}" for s in ("complete", "incomplete", "rejected"))
        lines.append(f"{self.folder}: {len(self.cases)} cases: {counts}")
        for case in self.cases:
            for problem in case.problems:
                lines.append(f"  {problem}")
        return "\n".join(lines)


def check_folder(folder: str | Path, require_label: bool = True) -> DataReport:
    """Find the cases in ``folder`` (any layout :func:`nslfcore.data.discovery.find_cases` knows) and check each."""
    statuses = []
    for files in find_cases(folder):
        inspection = inspect_case(files, require_label)
        missing_only = len(inspection.problems) == len(inspection.missing)
        if not inspection.problems:
            status = "complete"
        elif missing_only:
            status = "incomplete"
        else:
            status = "rejected"
        statuses.append(CaseStatus(files.name, status, inspection.problems))
    return DataReport(Path(folder), statuses)
