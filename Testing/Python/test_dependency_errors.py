"""The dependency step never raises into a Qt slot: every failure is one dialog whose details are the installer's output.

:func:`NSLFSlicerLib.dependencies.ensure_dependencies` is what the panel's buttons call. The
PyTorch extension is a stand-in module (``PyTorchUtils``) whose torch check or install fails the ways
the real one does (``CalledProcessError`` from pip, a torch that does not load); Slicer's dialogs
are recorded instead of shown; pip is the real pip of this environment, failing on a wheel that
does not exist (no network needed).
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import slicer.util
from NSLFSlicerLib import dependencies
from NSLFSlicerLib.dependencies import (
    DependencyError,
    ensure_dependencies,
    install_packages,
)

MISSING_WHEEL = "/nonexistent/nslf_missing-1.0-py3-none-any.whl"


@pytest.fixture
def dialogs(monkeypatch):
    """Slicer's dialogs, recorded: errors as ``(text, details)``; confirmations answered yes."""
    shown: dict[str, list] = {"error": [], "confirm": []}
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: shown["error"].append((text, kw.get("detailedText"))),
                        raising=False)  # fmt: skip
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **kw: shown["confirm"].append(text) or True,
                        raising=False)  # fmt: skip
    return shown


def pytorch_extension(monkeypatch, installed=None, install=None):
    """A ``PyTorchUtils`` whose ``torchInstalled`` and ``installTorch`` are the given callables."""
    logic = types.SimpleNamespace(torchInstalled=installed or (lambda: True), installTorch=install,
                                  torch=types.SimpleNamespace(__version__="2.9.0+cpu"))  # fmt: skip
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=lambda: logic))


def test_a_failed_pip_install_carries_pips_own_output():
    with pytest.raises(DependencyError) as caught:
        install_packages([MISSING_WHEEL])
    error = caught.value
    assert str(error).startswith(f"Installing {MISSING_WHEEL} failed (pip ended with exit code 1)")
    assert "No such file or directory" in error.details and MISSING_WHEEL in error.details  # pip's words, not an exit status
    assert "\n" not in str(error)  # one sentence for the dialog, the output under Show Details


def test_the_slot_shows_pips_output_when_the_packages_fail(monkeypatch, dialogs):
    pytorch_extension(monkeypatch)
    monkeypatch.setattr(dependencies, "missing_packages", lambda features=(): [MISSING_WHEEL])
    assert ensure_dependencies(ask=True) is False
    (text, details), = dialogs["error"]
    assert "failed" in text and "returned non-zero exit status" not in text + details
    assert "No such file or directory" in details
    assert dialogs["confirm"] and MISSING_WHEEL in dialogs["confirm"][0]


def test_a_failed_torch_install_is_one_dialog_not_a_traceback(monkeypatch, dialogs):
    def install(**kwargs):
        raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install", "torch"],
                                            output="ERROR: No matching distribution found for torch>=2.8")  # fmt: skip

    pytorch_extension(monkeypatch, installed=lambda: False, install=install)
    assert ensure_dependencies(ask=False) is False
    (text, details), = dialogs["error"]
    assert text.startswith("Installing PyTorch failed") and "PyTorch Utils" in text
    assert details == "ERROR: No matching distribution found for torch>=2.8"


def test_a_torch_that_does_not_load_is_one_dialog(monkeypatch, dialogs):
    def installed():
        raise OSError("[WinError 126] The specified module could not be found. Error loading c10.dll")

    pytorch_extension(monkeypatch, installed=installed)
    assert ensure_dependencies(ask=False) is False
    (text, details), = dialogs["error"]
    assert text.startswith("PyTorch is installed but does not load (OSError:") and "c10.dll" in text
    assert "Traceback" in details


def test_a_declined_torch_install_is_no_error(monkeypatch, dialogs):
    pytorch_extension(monkeypatch, installed=lambda: False, install=lambda **kwargs: None)
    assert ensure_dependencies(ask=True) is False and dialogs["error"] == []


def test_without_the_pytorch_extension_the_dialog_says_what_to_install(monkeypatch, dialogs):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import fails
    assert ensure_dependencies(ask=True) is False
    assert dialogs["error"] == [(("NSLF needs the PyTorch extension; install 'PyTorch' from the Extensions Manager and "
                                  "restart Slicer."), None)]  # fmt: skip


def test_with_everything_installed_the_step_passes(monkeypatch, dialogs):
    pytorch_extension(monkeypatch)
    assert ensure_dependencies(ask=True) is True and dialogs == {"error": [], "confirm": []}


def test_the_dependency_dialogs_go_through_slicers_translation(monkeypatch, dialogs):
    """In Slicer, ``slicer.i18n.tr`` translates every sentence and title the dependency step shows."""
    i18n = types.SimpleNamespace(tr=lambda text: f"[fr] {text}")
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    pytorch_extension(monkeypatch)
    monkeypatch.setattr(dependencies, "missing_packages", lambda features=(): [MISSING_WHEEL])
    assert ensure_dependencies(ask=True) is False
    assert dialogs["confirm"][0].startswith(f"[fr] NSLF needs these Python packages: {MISSING_WHEEL}.")
    (text, _details), = dialogs["error"]
    assert text.startswith(f"[fr] Installing {MISSING_WHEEL} failed")
    problem = dependencies.torch_version_problem("2.4.1")
    assert problem.startswith("[fr] NSLF needs PyTorch >=2.8, but this Slicer has PyTorch 2.4.1")
