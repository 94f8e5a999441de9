"""The module loads in a fresh 3D Slicer: only what Slicer >= 5.10 bundles is imported until the dependency step.

Slicer does not bundle torch, monai, nibabel, nilearn, tqdm or scikit-image; a module-level import
of any of them makes Slicer log "Failed to load scripted module" and drop the module from the
menu before its dependency dialog can run (a top-level ``nibabel`` import did exactly that). The
check is an allowlist (``shims/import_allowlist.py``): every top-level package outside the
standard library, Slicer's bundled packages, Slicer's own modules and the extension is refused.
It runs in this environment and, when the machine has Python 3.12 (Slicer 5.10-5.12's), in
``.venv-slicer``: Python 3.12 with Slicer's bundled packages and slicer-core only, no torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "NSLFSlicer"
SCRIPT = Path(__file__).parent / "shims" / "import_allowlist.py"
SLICER_PYTHON = ROOT / ".venv-slicer" / "bin" / "python"
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


def test_catalog_entry_follows_the_schema_and_the_extension_metadata():
    entry = json.loads((ROOT / "Resources" / "ExtensionsIndex" / "NSLFSlicer.json").read_text())
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "enabled", "scm_revision", "scm_type",
               "scm_url", "tier"}  # fmt: skip
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    s4ext = dict(line.split(" ", 1) for line in (ROOT / "NSLFSlicer.s4ext").read_text().splitlines()
                 if line.strip() and not line.startswith("#") and " " in line)  # fmt: skip
    assert entry["category"] == s4ext["category"] and entry["scm_url"] == s4ext["scmurl"]
    assert entry["build_dependencies"] == s4ext["depends"].split()
    assert "5.10" in (ROOT / "Resources" / "ExtensionsIndex" / "README.md").read_text()
