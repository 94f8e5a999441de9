"""Packaging rules: nslfcore imports no Slicer, Qt or VTK; the command line starts; the repository layout."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import nslfcore

REPO = Path(__file__).resolve().parents[2]


def test_nslfcore_never_imports_slicer_qt_or_vtk():
    modules = [m.name for m in pkgutil.walk_packages(nslfcore.__path__, "nslfcore.")]
    assert "nslfcore.models.gmn" in modules and "nslfcore.compat" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0].lower() in ('slicer', 'qt', 'ctk', 'vtk', 'pyqt5', 'pyside6', 'mrml'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_lists_its_commands():
    result = subprocess.run([sys.executable, "-m", "nslfcore.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout


def test_repository_top_level_is_the_fixed_layout():
    required = {"NSLFSlicer", "NSLFCore", "Resources", "Testing", "CMakeLists.txt", "NSLFSlicer.s4ext", "README.md"}
    allowed = required | {".ci", "benchmarks", "LICENSE", ".git", ".gitignore", ".venv"}
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    top = {path.split("/")[0] for path in tracked}
    assert required <= top, f"missing: {sorted(required - top)}"
    assert top <= allowed, f"unexpected top-level entries: {sorted(top - allowed)}"
    ci = (REPO / ".ci" / "run").read_text()
    assert "NSLFCore/run test" in ci and "NSLFCore/run test" in (REPO / "README.md").read_text()
