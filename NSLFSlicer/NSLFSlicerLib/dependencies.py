"""Installing what NSLF needs inside Slicer, after asking the user, without touching what Slicer ships.

* torch: through the PyTorch extension (``PyTorchUtils.PyTorchUtilsLogic().installTorch``), which
  picks the build matching the machine's CUDA, with :data:`TORCH_REQUIREMENT` (what the pinned
  monai supports); an installed torch outside it is reported, never replaced behind the user's back.
* ``Resources/requirements.txt`` (monai, nibabel, pinned): one ``pip install`` whose constraints
  file pins every distribution already in Slicer's Python at its installed version
  (:func:`frozen_constraints`), so pip can add packages but never upgrade, downgrade or replace
  torch, numpy, SimpleITK, VTK, requests or anything else Slicer ships. Requirements naming
  Slicer's own packages are refused outright.
* nslfcore: not installed; it ships next to the module (see ``NSLFSlicerLib.ensure_engine_on_path``).
* Optional features: a ``# [name]`` comment line in ``requirements.txt`` starts the requirements of
  feature ``name``, asked for and installed the same way only when the feature is first used. The
  one feature is ``preprocess`` (:data:`PREPROCESS`): deepbet and its dependencies, for the "Raw
  scans: register and skull-strip" option (issue 32).

Failures open an error dialog with pip's output; a restart is offered when a package that was
installed still cannot be imported in the running Slicer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import tempfile
from pathlib import Path

from . import MODULE_DIR

PROTECTED = ("simpleitk", "vtk", "numpy", "torch", "requests", "scipy", "pydicom", "pillow", "packaging")
#: The feature "Raw scans: register and skull-strip" (the ``# [preprocess]`` section of requirements.txt).
PREPROCESS = "preprocess"
#: Import names of requirements whose distribution name is not their import name.
IMPORT_NAMES = {"connected-components-3d": "cc3d", "python-dateutil": "dateutil"}
#: The torch versions the pinned monai (``Resources/requirements.txt``) supports.
TORCH_REQUIREMENT = ">=2.8"


def requirements_file() -> Path:
    """``requirements.txt``: in the installed module's Resources, else the checkout's top ``Resources/``."""
    for candidate in (MODULE_DIR / "Resources" / "requirements.txt", MODULE_DIR.parent / "Resources" / "requirements.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"requirements.txt is missing next to {MODULE_DIR}; reinstall the NSLFSlicer extension.")


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def requirements(feature: str | None = None) -> list[str]:
    """Pinned requirement lines of the module (``feature=None``) or of one feature's ``# [feature]`` section.

    Comments are dropped; raises if a line names a package Slicer ships.
    """
    section: str | None = None
    reqs = []
    for line in requirements_file().read_text(encoding="utf-8").splitlines():
        marker = re.match(r"#\s*\[([\w-]+)\]", line.strip())
        if marker:
            section = marker[1]
        requirement = line.split("#")[0].strip()
        if requirement and section == feature:
            reqs.append(requirement)
    for req in reqs:
        if _name(req) in PROTECTED:
            raise ValueError(f"requirements.txt asks for {_name(req)}, which Slicer provides; remove it from {requirements_file()}.")
    return reqs


def import_name(requirement: str) -> str:
    """The module a requirement line installs (``connected-components-3d==4.1.1`` -> ``cc3d``)."""
    name = _name(requirement)
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def missing_packages(features: tuple[str, ...] = ()) -> list[str]:
    """Requirement lines of the module and of ``features`` whose import module is not importable (``torch`` not included)."""
    reqs = requirements() + [req for feature in features for req in requirements(feature)]
    return [req for req in reqs if importlib.util.find_spec(import_name(req)) is None]


def missing_for_self_test() -> list[str]:
    """Import names the self-test's inference needs but this Python lacks (``[]``: it can run)."""
    return [name for name in ("torch", "monai", "nibabel") if importlib.util.find_spec(name) is None]


def frozen_constraints() -> str:
    """``name==version`` for every distribution installed in this Python: pip may add, never change."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        if name and dist.version:
            pins[name.lower().replace("_", "-")] = f"{name}=={dist.version}"
    return "\n".join(pins[k] for k in sorted(pins)) + "\n"


def pip_arguments(packages: list[str], constraints_file: str | Path) -> list[str]:
    """The ``pip install`` arguments for ``packages`` under ``constraints_file`` (see :func:`frozen_constraints`)."""
    return [*packages, "--constraint", str(constraints_file), "--upgrade-strategy", "only-if-needed",
            "--disable-pip-version-check"]  # fmt: skip


def torch_version_problem(version: str) -> str | None:
    """A one-sentence message when the installed torch ``version`` is outside :data:`TORCH_REQUIREMENT`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        ok = Version(version.split("+")[0]) in SpecifierSet(TORCH_REQUIREMENT)
    except InvalidVersion:
        ok = False
    if ok:
        return None
    return (f"NSLF needs PyTorch {TORCH_REQUIREMENT}, but this Slicer has PyTorch {version}; update it in the PyTorch "
            "module (Utilities > PyTorch Utils: uninstall, then install), then restart Slicer.")  # fmt: skip


def install_packages(packages: list[str]) -> None:
    """``slicer.util.pip_install`` of ``packages`` with every installed distribution frozen; raises on failure."""
    import slicer

    with tempfile.TemporaryDirectory(prefix="nslf-pip-") as folder:
        constraints = Path(folder) / "installed-constraints.txt"
        constraints.write_text(frozen_constraints(), encoding="utf-8")
        slicer.util.pip_install(pip_arguments(packages, constraints))


def ensure_dependencies(ask: bool = True, preprocess: bool = False) -> bool:
    """Inside Slicer: install torch and missing packages after asking; ``False`` if declined or failed (with a dialog).

    ``preprocess``: the run preprocesses raw scans, so the :data:`PREPROCESS` feature's packages
    (deepbet) are needed too; they are asked for only then.
    """
    features = (PREPROCESS,) if preprocess else ()
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay("NSLF needs the PyTorch extension; install 'PyTorch' from the Extensions Manager and restart Slicer.")
        return False
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        if torch_logic.installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return False
    else:
        problem = torch_version_problem(str(torch_logic.torch.__version__))
        if problem:
            slicer.util.errorDisplay(problem)
            return False
    missing = missing_packages(features)
    if not missing:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
        "NSLF needs these Python packages: " + ", ".join(missing) + ". Install them now? "
        "(Packages Slicer already has are not changed.)", "NSLF dependencies"
    ):
        return False
    try:
        install_packages(missing)
    except Exception as error:  # noqa: BLE001 - pip's failure, shown to the user with its details
        slicer.util.errorDisplay("Installing " + ", ".join(missing) + " failed; NSLF cannot run yet.", detailedText=str(error))
        return False
    importlib.invalidate_caches()
    still = missing_packages(features)
    if still:
        if slicer.util.confirmYesNoDisplay(
            ", ".join(still) + " were installed but need a restart of Slicer to be used. Restart now?", "NSLF dependencies"
        ):
            slicer.util.restart()
        return False
    return True
