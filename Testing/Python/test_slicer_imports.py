"""The module loads in a fresh 3D Slicer: only what Slicer >= 5.10 bundles is imported until the dependency step.

Slicer does not bundle torch, monai, nibabel, nilearn, tqdm or scikit-image; a module-level import
of any of them makes Slicer log "Failed to load scripted module" and drop the module from the
menu before its dependency dialog can run (a top-level ``nibabel`` import did exactly that). The
check is an allowlist (``shims/import_allowlist.py``): every top-level package outside the
standard library, Slicer's bundled packages, Slicer's own modules and the extension is refused.
It runs in this environment and, when the machine has Python 3.12 (Slicer 5.10-5.12's), in
``.venv-slicer``: Python 3.12 with Slicer 5.10's bundled packages at Slicer 5.10's versions
(``NSLFCore/constraints-slicer.txt``) and slicer-core only, no torch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "NSLFSlicer"
SCRIPT = Path(__file__).parent / "shims" / "import_allowlist.py"
SLICER_PYTHON = ROOT / ".venv-slicer" / "bin" / "python"
#: What Slicer 5.10.0 bundles (Slicer/Slicer tag v5.10.0, SuperBuild/External_python-*.cmake and
#: External_SimpleITK.cmake), as pip names them.
SLICER_5_10 = {"numpy": "2.0.2", "scipy": "1.13.1", "simpleitk": "2.5.2", "pydicom": "2.4.4", "pillow": "11.2.1",
               "setuptools": "80.9.0", "packaging": "25.0", "requests": "2.32.3", "urllib3": "2.4.0", "certifi": "2025.4.26",
               "idna": "3.10", "charset-normalizer": "3.4.2", "typing-extensions": "4.14.0", "pip": "25.1.1"}  # fmt: skip
#: Never imported before the dependency step (the allowlist refuses them; this names them in the failure).
HEAVY = {"torch", "monai", "nibabel", "nilearn", "tqdm", "skimage"}


def _import_module_with(python: Path | str) -> dict:
    proc = subprocess.run([str(python), str(SCRIPT), str(MODULE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the module does not load with only Slicer's packages:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["logic"] == "NSLFSlicerLogic" and report["models"] >= 1
    assert report["devices"] == ["Automatic (GPU if available)", "CPU"]  # without torch: no GPU can be listed
    assert not HEAVY & set(report["imported"]), report["imported"]
    assert report["refused"] == [], report["refused"]
    return report


def test_module_loads_with_only_slicers_packages():
    report = _import_module_with(sys.executable)
    assert {"slicer", "vtkmodules", "numpy", "nslfcore", "NSLFSlicerLib"} <= set(report["imported"])


def test_allowlist_refuses_what_slicer_lacks(tmp_path):
    """The check itself: a module file importing nibabel at module level is refused."""
    bad = tmp_path / "NSLFSlicer"
    bad.mkdir()
    (bad / "NSLFSlicer.py").write_text("import nibabel\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nibabel is not bundled with 3D Slicer" in proc.stderr


@pytest.mark.skipif(not SLICER_PYTHON.exists(), reason="no .venv-slicer (NSLFCore/run test makes it where Python 3.12 exists)")
def test_module_loads_in_slicers_python_312_without_torch():
    version = subprocess.run([str(SLICER_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert version == "(3, 12)"
    has_torch = subprocess.run([str(SLICER_PYTHON), "-c", "import torch"], capture_output=True).returncode == 0
    assert not has_torch  # what a fresh Slicer offers before the dependency step
    report = _import_module_with(SLICER_PYTHON)
    assert report["python"].startswith("3.12")


def slicer_pins() -> dict[str, str]:
    """``name: version`` of NSLFCore/constraints-slicer.txt (names normalised as pip does)."""
    lines = (ROOT / "NSLFCore" / "constraints-slicer.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip().split("==") for line in lines if line.split("#")[0].strip()]
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_slicer_env_pins_are_slicer_5_10s():
    """The pins of .venv-slicer are what Slicer 5.10.0's SuperBuild installs (SuperBuild/External_python-*.cmake)."""
    pins = slicer_pins()
    assert {name: pins.get(name) for name in SLICER_5_10} == SLICER_5_10
    assert pins["slicer-core"] == "5.13.31053.0" and pins["vtk"] == "9.6.2"  # MRML in plain Python; needs this VTK
    main = (ROOT / "NSLFCore" / "constraints.txt").read_text()
    assert "numpy==2.4.6" in main and pins["numpy"] != "2.4.6"  # why the Slicer pins are a file of their own


@pytest.mark.skipif(not SLICER_PYTHON.exists(), reason="no .venv-slicer (NSLFCore/run test makes it where Python 3.12 exists)")
def test_slicer_env_holds_its_pins():
    """.venv-slicer is rebuilt when constraints-slicer.txt changes: every pinned package is installed at its pin."""
    code = ("import importlib.metadata as m, json, re; print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): "
            "d.version for d in m.distributions()}))")  # fmt: skip
    out = subprocess.run([str(SLICER_PYTHON), "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    installed = json.loads(out)
    assert {name: installed.get(name) for name in slicer_pins()} == slicer_pins()


@pytest.mark.skipif(not SLICER_PYTHON.exists(), reason="no .venv-slicer (NSLFCore/run test makes it where Python 3.12 exists)")
def test_every_source_file_compiles_on_python_312(tmp_path):
    folders = [ROOT / "NSLFCore" / "nslfcore", MODULE, ROOT / "benchmarks"]
    proc = subprocess.run(
        [str(SLICER_PYTHON), "-c",
         "import compileall, sys; sys.exit(0 if all(compileall.compile_dir(d, quiet=1, legacy=False, ddir=d, force=True) "
         "for d in sys.argv[1:]) else 1)", *map(str, folders)],
        capture_output=True, text=True, timeout=300, env={"PYTHONPYCACHEPREFIX": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_minimum_slicer_version_is_checked_and_stated():
    from NSLFSlicerLib.compatibility import MINIMUM_SLICER, running_slicer_problem, version_problem

    assert MINIMUM_SLICER == (5, 10)
    assert "needs 3D Slicer 5.10 or later, but this is Slicer 5.8" in version_problem(5, 8)
    assert version_problem(5, 10, (3, 12)) is None and version_problem(6, 0) is None
    assert "Python 3.12" in version_problem(5, 10, (3, 9))
    assert running_slicer_problem() is None  # slicer-core has no application: nothing to check
    for path in ("README.md", "NSLFSlicer.s4ext", "CMakeLists.txt"):
        assert "5.10" in (ROOT / path).read_text(), f"{path} does not state the minimum Slicer version"
