"""The module's dependency step: pinned packages installed without changing anything Slicer ships.

The pip command the module runs inside Slicer (:func:`NSLFSlicerLib.dependencies.pip_arguments`
with the frozen-constraints file of that Python) is run here with ``--dry-run --report`` in
``.venv-slicer`` (Python 3.12 with Slicer's bundled packages and slicer-core) plus an installed
torch. A real torch build for Python 3.12 is a multi-GB CUDA download, so the torch is its
metadata only (``torch-2.13.0.dist-info`` on ``PYTHONPATH``): pip resolves against installed
*metadata*, which is what is under test. Needs PyPI (the resolver reads monai's and nibabel's).
The frozen constraints are written after ``import setuptools``, as in a Slicer where anything
imported it (its ``_vendor`` then sits on ``sys.path`` with older packaging and typing_extensions).
The same for the ``preprocess`` feature (deepbet, for the "Raw scans" option, issue 32): asked
for only with the option, and accepting the numpy and packaging Slicer 5.10 ships.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "NSLFSlicer"
SLICER_PYTHON = ROOT / ".venv-slicer" / "bin" / "python"
#: Packages 3D Slicer 5.10+ ships (and the torch the PyTorch extension installs): pip must change none.
SLICER_SHIPS = {"numpy", "scipy", "simpleitk", "vtk", "requests", "pydicom", "pillow", "packaging", "torch",
                "urllib3", "certifi", "idna", "charset-normalizer", "slicer-core", "typing-extensions", "setuptools",
                "six", "pyparsing", "python-dateutil", "pip", "wheel"}  # fmt: skip
#: The numpy and packaging of Slicer 5.10's Python (3.12), which the packages pip adds must accept.
SLICER_NUMPY, SLICER_PACKAGING = "2.0.2", "25.0"


def test_requirements_are_pinned_and_never_name_slicers_packages():
    from NSLFSlicerLib.dependencies import PROTECTED, requirements

    reqs = requirements()
    assert reqs == ["monai==1.6.1", "nibabel==5.4.2"]
    constraints = (ROOT / "NSLFCore" / "constraints.txt").read_text()
    assert all(req in constraints for req in reqs)  # the same pins as the engine's set-up
    assert {"simpleitk", "vtk", "numpy", "torch"} <= set(PROTECTED)


def test_frozen_constraints_pin_every_installed_distribution():
    from importlib.metadata import version

    from NSLFSlicerLib.dependencies import frozen_constraints, pip_arguments

    pins = dict(line.lower().split("==") for line in frozen_constraints().splitlines())
    assert pins["numpy"] == version("numpy") and pins["torch"] == version("torch") and pins["vtk"] == version("vtk")
    args = pip_arguments(["monai==1.6.1"], "/tmp/c.txt")
    assert args[:3] == ["monai==1.6.1", "--constraint", "/tmp/c.txt"]


def _dist_info(folder: Path, name: str, version: str) -> None:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_frozen_constraints_pin_the_first_copy_on_sys_path_as_import_and_pip_do(tmp_path, monkeypatch):
    """Slicer 5.10 once setuptools is imported: its ``_vendor`` (packaging 24.2) comes after site-packages (25.0)."""
    import importlib.metadata

    from NSLFSlicerLib.dependencies import frozen_constraints

    site, vendor = tmp_path / "site-packages", tmp_path / "setuptools" / "_vendor"
    _dist_info(site, "packaging", "25.0")
    _dist_info(site, "typing_extensions", "4.14.0")
    _dist_info(vendor, "packaging", "24.2")
    _dist_info(vendor, "typing_extensions", "4.12.2")
    _dist_info(vendor, "jaraco.text", "3.12.1")
    monkeypatch.setattr(sys, "path", [str(site), str(vendor)])
    pins = frozen_constraints().split()
    assert pins == ["jaraco.text==3.12.1", "packaging==25.0", "typing_extensions==4.14.0"], pins
    for pin in pins:  # the independent reference: what importlib.metadata (and so pip) resolves each name to
        name, version = pin.split("==")
        assert importlib.metadata.version(name) == version


def test_torch_version_requirement():
    from NSLFSlicerLib.dependencies import TORCH_REQUIREMENT, torch_version_problem

    assert TORCH_REQUIREMENT == ">=2.8"  # monai 1.6.1 needs torch>=2.8.0
    assert torch_version_problem("2.8.0+cu126") is None and torch_version_problem("2.13.0+cpu") is None
    assert "needs PyTorch >=2.8, but this Slicer has PyTorch 2.4.1" in torch_version_problem("2.4.1")


def slicer_pip_dry_run(tmp_path: Path, features: tuple[str, ...] = ()) -> tuple[dict, list[list[str]]]:
    """pip's ``--dry-run --report`` of the module's install command for ``features`` in ``.venv-slicer``.

    Returns pip's report and what :func:`missing_packages` asks for there without and with
    ``features``; the frozen constraints are left in ``tmp_path / "c.txt"``. Skips the test when
    PyPI cannot be reached.
    """
    fake = tmp_path / "site"
    info = fake / "torch-2.13.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    env = {"PYTHONPATH": f"{fake}:{MODULE}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = (
        "import json, subprocess, sys\n"
        "import setuptools  # as in Slicer once anything imported it: its _vendor (packaging 24.2) joins sys.path\n"
        "from NSLFSlicerLib.dependencies import frozen_constraints, missing_packages, pip_arguments\n"
        f"open({str(tmp_path / 'c.txt')!r}, 'w').write(frozen_constraints())\n"
        f"json.dump([missing_packages(), missing_packages({features!r})], open({str(tmp_path / 'm.json')!r}, 'w'))\n"
        f"args = pip_arguments(missing_packages({features!r}), {str(tmp_path / 'c.txt')!r})\n"
        f"cmd = [sys.executable, '-m', 'pip', 'install', '--dry-run', '--report', {str(tmp_path / 'r.json')!r}, '-q', *args]\n"
        "sys.exit(subprocess.run(cmd).returncode)\n"
    )
    proc = subprocess.run([str(SLICER_PYTHON), "-c", code], capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0 and ("NewConnectionError" in proc.stderr or "Could not fetch URL" in proc.stderr):
        pytest.skip("PyPI is not reachable: the resolver cannot read the requirements' metadata")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "r.json").read_text()), json.loads((tmp_path / "m.json").read_text())


@pytest.mark.skipif(not SLICER_PYTHON.exists(), reason="no .venv-slicer (NSLFCore/run test makes it where Python 3.12 exists)")
def test_pip_command_changes_nothing_slicer_ships(tmp_path):
    report, _ = slicer_pip_dry_run(tmp_path)
    constraints = (tmp_path / "c.txt").read_text().lower()
    assert "torch==2.13.0" in constraints and "numpy==" in constraints and "vtk==" in constraints
    # Slicer's packaging and typing_extensions, not the older ones in setuptools' _vendor
    assert "\npackaging==25.0\n" in constraints and "\ntyping_extensions==4.14.0\n" in constraints
    installs = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in report["install"]}
    assert installs.get("monai") == "1.6.1" and installs.get("nibabel") == "5.4.2", installs
    assert not SLICER_SHIPS & set(installs), installs  # nothing Slicer ships is upgraded, downgraded or replaced
    assert set(installs) == {"monai", "nibabel"}, installs


def test_deepbet_is_a_feature_of_its_own_pinned_as_the_engine_pins_it():
    from NSLFSlicerLib import dependencies

    assert dependencies.requirements() == ["monai==1.6.1", "nibabel==5.4.2"]  # asked for at the first run
    preprocess = dependencies.requirements(dependencies.PREPROCESS)
    assert preprocess[0] == "deepbet==1.0.2"
    constraints = {line.split("==")[0].lower(): line for line in (ROOT / "NSLFCore" / "constraints.txt").read_text().split()}
    for requirement in preprocess:
        assert constraints[requirement.split("==")[0].lower()] == requirement  # the engine's pins
    assert [dependencies.import_name(r) for r in preprocess[:2]] == ["deepbet", "cc3d"]
    assert dependencies.missing_packages((dependencies.PREPROCESS,)) == []  # this environment has deepbet


@pytest.mark.skipif(not SLICER_PYTHON.exists(), reason="no .venv-slicer (NSLFCore/run test makes it where Python 3.12 exists)")
def test_deepbet_is_asked_for_only_with_the_option_and_installs_without_changing_slicer(tmp_path):
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    report, (without, with_option) = slicer_pip_dry_run(tmp_path, ("preprocess",))
    assert without == ["monai==1.6.1", "nibabel==5.4.2"]  # deepbet is not asked for before the option is used
    assert with_option[:3] == [*without, "deepbet==1.0.2"] and "pandas==3.1.2" in with_option
    installs = {item["metadata"]["name"].lower().replace("_", "-"): item for item in report["install"]}
    assert installs["deepbet"]["metadata"]["version"] == "1.0.2" and installs["pandas"]["metadata"]["version"] == "3.1.2"
    assert not SLICER_SHIPS & set(installs), sorted(installs)  # nothing Slicer ships is upgraded, downgraded or replaced
    environment = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.10", "extra": ""}
    for name, item in installs.items():  # Slicer 5.10's numpy and packaging satisfy every package pip would add
        for text in item["metadata"].get("requires_dist", []):
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            wanted = {"numpy": SLICER_NUMPY, "packaging": SLICER_PACKAGING}.get(requirement.name.lower())
            assert wanted is None or requirement.specifier.contains(wanted), f"{name} needs {text}"


def test_self_test_knows_what_it_lacks():
    from NSLFSlicerLib.dependencies import missing_for_self_test

    assert missing_for_self_test() == []  # this environment has torch, monai and nibabel
    if SLICER_PYTHON.exists():  # a fresh Slicer's Python: the self-test must skip, naming them
        code = f"import sys; sys.path.insert(0, {str(MODULE)!r}); from NSLFSlicerLib.dependencies import missing_for_self_test; print(missing_for_self_test())"
        out = subprocess.run([str(SLICER_PYTHON), "-c", code], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "['torch', 'monai', 'nibabel']", out.stderr
