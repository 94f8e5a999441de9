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

Every failure is a :class:`DependencyError` (one sentence, the installer's output as details) that
:func:`ensure_dependencies`, the call the panel's buttons make, shows in one error dialog: nothing
escapes into Qt. pip runs as a child process whose output is kept (:func:`run_pip`), so the
dialog's details are pip's own words. A restart is offered when a package that was installed
still cannot be imported in the running Slicer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import tempfile
import traceback
from collections.abc import Callable
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
    """``name==version`` for every distribution installed in this Python: pip may add, never change.

    A name found twice on ``sys.path`` is pinned at its FIRST copy, the one ``import``,
    ``importlib.metadata.version`` and pip use: once anything imports setuptools, its ``_vendor``
    folder (packaging 24.2, typing_extensions 4.12.2 in Slicer 5.10) joins ``sys.path`` after
    Slicer's own site-packages (packaging 25.0, typing_extensions 4.14.0); pinning the later copy
    would make pip downgrade Slicer's.
    """
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # in sys.path order
        name = (dist.metadata["Name"] or "").strip()
        if name and dist.version:
            pins.setdefault(re.sub(r"[-_.]+", "-", name).lower(), f"{name}=={dist.version}")
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
    return _("NSLF needs PyTorch {requirement}, but this Slicer has PyTorch {version}; update it in the PyTorch "
             "module (Utilities > PyTorch Utils: uninstall, then install), then restart Slicer.").format(
        requirement=TORCH_REQUIREMENT, version=version)  # fmt: skip


def _(text: str) -> str:
    """``text`` translated by Slicer (``slicer.i18n.tr``, context this file's, as for the module's own ``_()``);
    ``text`` itself where Slicer's Qt layer is absent (slicer-core alone, CI)."""
    try:
        from slicer.i18n import tr
    except ImportError:
        return text
    return tr(text)


class DependencyError(RuntimeError):
    """A failed dependency step: ``str(error)`` is the one sentence for the user, :attr:`details` what the installer printed."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def run_pip(args: list[str], on_line: Callable[[str], None] | None = None) -> None:
    """``python -m pip install ARGS`` in this Python (``PythonSlicer`` inside Slicer), its output kept.

    Each output line goes to ``on_line`` as it comes (Slicer: the console, and the GUI kept
    alive). Raises :class:`DependencyError` with pip's output as :attr:`DependencyError.details`
    when pip fails or cannot start (its message a fragment, ``"pip ended with exit code 1"``).
    """
    from .process_runner import child_environment, child_process_options, python_executable

    command = [python_executable(), "-m", "pip", "install", *args]
    lines: list[str] = []
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              encoding="utf-8", errors="replace", env=child_environment(),
                              **child_process_options()) as process:  # fmt: skip
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip())
                if on_line is not None:
                    on_line(lines[-1])
            code = process.wait()
    except OSError as error:
        raise DependencyError(f"pip could not be started: {error}", " ".join(command)) from error
    if code != 0:
        raise DependencyError(f"pip ended with exit code {code}", "\n".join(lines))


def install_packages(packages: list[str], on_line: Callable[[str], None] | None = None) -> None:
    """Install ``packages`` with every installed distribution frozen (:func:`frozen_constraints`).

    Raises :class:`DependencyError` naming the packages, pip's output as its details.
    """
    with tempfile.TemporaryDirectory(prefix="nslf-pip-") as folder:
        constraints = Path(folder) / "installed-constraints.txt"
        constraints.write_text(frozen_constraints(), encoding="utf-8")
        try:
            run_pip(pip_arguments(packages, constraints), on_line)
        except DependencyError as error:
            raise DependencyError(_("Installing {packages} failed ({reason}); NSLF cannot run yet. pip's output is under "
                                    "Show Details.").format(packages=", ".join(packages), reason=error),
                                  error.details) from error  # fmt: skip


def _installer_output(error: BaseException) -> str:
    """What a failed installer left in ``error`` (a ``CalledProcessError``'s output, else the traceback)."""
    output = [text for text in (getattr(error, "output", None), getattr(error, "stderr", None)) if isinstance(text, str) and text]
    if output:
        return "\n".join(output)
    return "".join(traceback.format_exception(error)) + "\n(The installer's own output is in Slicer's Python console.)"


def _check_torch(ask: bool) -> bool:
    """PyTorch through the PyTorch extension: installed after asking (``False``: declined); raises :class:`DependencyError`."""
    try:
        import PyTorchUtils
    except ImportError as error:
        raise DependencyError(_("NSLF needs the PyTorch extension; install 'PyTorch' from the Extensions Manager and "
                                "restart Slicer.")) from error  # fmt: skip
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    try:
        installed = torch_logic.torchInstalled()
        version = str(torch_logic.torch.__version__) if installed else ""
    except Exception as error:  # noqa: BLE001 - a torch that is there but does not load (a DLL, a broken install)
        raise DependencyError(_("PyTorch is installed but does not load ({reason}); reinstall it in the PyTorch module "
                                "(Utilities > PyTorch Utils), then restart Slicer.").format(
                                    reason=f"{type(error).__name__}: {error}"),
                              _installer_output(error)) from error  # fmt: skip
    if installed:
        problem = torch_version_problem(version)
        if problem:
            raise DependencyError(problem)
        return True
    try:
        torch = torch_logic.installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT)
    except Exception as error:  # noqa: BLE001 - pip's failure (CalledProcessError) or the extension's
        raise DependencyError(_("Installing PyTorch failed ({reason}); NSLF cannot run yet. Check the network, then try "
                                "again or install it in the PyTorch module (Utilities > PyTorch Utils).").format(reason=error),
                              _installer_output(error)) from error  # fmt: skip
    return torch is not None


def prepare_dependencies(ask: bool = True, preprocess: bool = False) -> bool:
    """The dependency step inside Slicer: torch, then the missing packages, after asking.

    ``False`` when the user declined (or a restart is needed); raises :class:`DependencyError`
    (one sentence; the installer's output as details) when something failed. ``preprocess``: the
    run preprocesses raw scans, so the :data:`PREPROCESS` feature's packages (deepbet) are needed
    too; they are asked for only then.
    """
    import slicer

    features = (PREPROCESS,) if preprocess else ()
    if not _check_torch(ask):
        return False
    missing = missing_packages(features)
    if not missing:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
        _("NSLF needs these Python packages: {packages}. Install them now? (Packages Slicer already has are not "
          "changed.)").format(packages=", ".join(missing)), _("NSLF dependencies")
    ):
        return False
    app = getattr(slicer, "app", None)
    install_packages(missing, lambda line: (print(line), app is not None and app.processEvents()))
    importlib.invalidate_caches()
    still = missing_packages(features)
    if still:
        if slicer.util.confirmYesNoDisplay(
            _("{packages} were installed but need a restart of Slicer to be used. Restart now?").format(
                packages=", ".join(still)),
            _("NSLF dependencies"),
        ):
            slicer.util.restart()
        return False
    return True


def ensure_dependencies(ask: bool = True, preprocess: bool = False) -> bool:
    """:func:`prepare_dependencies` for a Qt slot: never raises; a failure is one error dialog with the details.

    Returns whether NSLF can run now.
    """
    import slicer

    try:
        return prepare_dependencies(ask, preprocess)
    except DependencyError as error:
        slicer.util.errorDisplay(str(error), detailedText=error.details or None)
    except Exception as error:  # noqa: BLE001 - anything else must not escape into Qt either
        slicer.util.errorDisplay(_("The dependency step failed ({reason}).").format(reason=f"{type(error).__name__}: {error}"),
                                 detailedText="".join(traceback.format_exception(error)))  # fmt: skip
    return False
