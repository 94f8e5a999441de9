"""Installing what NSLF needs inside Slicer, after asking the user.

* torch: through the PyTorch extension (``PyTorchUtils.PyTorchUtilsLogic().installTorch``), which
  picks the build matching the machine's CUDA.
* ``Resources/requirements.txt`` (monai, nibabel, pinned): ``slicer.util.pip_install`` after
  ``slicer.util.confirmOkCancelDisplay``. Slicer's own SimpleITK, VTK and numpy are never touched
  (requirements naming them are refused).
* nslfcore: not installed; it ships next to the module (see ``NSLFSlicerLib.ensure_engine_on_path``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from . import MODULE_DIR

PROTECTED = ("simpleitk", "vtk", "numpy")


def requirements_file() -> Path:
    """``requirements.txt``: in the installed module's Resources, else the checkout's top ``Resources/``."""
    for candidate in (MODULE_DIR / "Resources" / "requirements.txt", MODULE_DIR.parent / "Resources" / "requirements.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"requirements.txt is missing next to {MODULE_DIR}; reinstall the NSLFSlicer extension.")


def requirements() -> list[str]:
    """Pinned requirement lines (comments dropped); raises if one names SimpleITK, VTK or numpy."""
    lines = [ln.split("#")[0].strip() for ln in requirements_file().read_text(encoding="utf-8").splitlines()]
    reqs = [ln for ln in lines if ln]
    for req in reqs:
        name = req.split("=")[0].split("<")[0].split(">")[0].strip().lower()
        if name in PROTECTED:
            raise ValueError(f"requirements.txt asks for {name}, which Slicer provides; remove it from {requirements_file()}.")
    return reqs


def missing_packages() -> list[str]:
    """Requirement lines whose import module is not importable (``torch`` not included)."""
    return [req for req in requirements() if importlib.util.find_spec(req.split("=")[0].strip().lower()) is None]


def ensure_dependencies(ask: bool = True) -> bool:
    """Inside Slicer: install torch and missing packages after asking; ``False`` if the user declined."""
    import slicer

    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError as error:
            raise RuntimeError("NSLF needs the PyTorch extension; install 'PyTorch' from the Extensions Manager and restart.") from error
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask) is None:
            return False
    missing = missing_packages()
    if missing:
        if ask and not slicer.util.confirmOkCancelDisplay(
            "NSLF needs these Python packages: " + ", ".join(missing) + ". Install them now?", "NSLF dependencies"
        ):
            return False
        slicer.util.pip_install(missing)
    return True
