"""Nothing heavy in Slicer's process when the panel opens: torch loads only in a child process (issue 33).

Opening the panel builds the logic, lists the models and fills the device selectors. The device list
starts as automatic + CPU (:class:`NSLFSlicerLib.panel_state.DeviceList`) and learns the GPUs from a
child process (:func:`NSLFSlicerLib.engine.device_query_command`), so torch and CUDA never load in
Slicer's own process. The check runs in a fresh interpreter of this environment, which has torch,
so that an import of torch anywhere on the way would show in its ``sys.modules``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from NSLFSlicerLib.panel_state import DeviceList

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "NSLFSlicer"
SHIMS = Path(__file__).parent / "shims"

PANEL_OPEN = f"""
import json, sys
sys.path[:0] = [{str(MODULE)!r}, {str(SHIMS)!r}]
import importlib.util
assert importlib.util.find_spec("torch") is not None  # torch is there: only not importing it keeps it out
import slicer_app_shims
slicer_app_shims.install()
import NSLFSlicer
from NSLFSlicerLib.engine import device_query_command
from NSLFSlicerLib.model_manager import installed_models
from NSLFSlicerLib.panel_state import DeviceList
from NSLFSlicerLib.process_runner import ProcessRunner

logic = NSLFSlicer.NSLFSlicerLogic()
models = installed_models()
devices = DeviceList(lambda: ProcessRunner(device_query_command()).start())
before = list(devices.choices)
started = devices.refresh()
devices._runner.wait(120)
answered = devices.poll()
print(json.dumps({{"torch_loaded": "torch" in sys.modules, "models": len(models), "before": before, "started": started,
                  "answered": answered, "error": devices.error, "again": devices.refresh()}}))
"""


def test_opening_the_panel_leaves_torch_out_of_slicers_process_and_lists_devices_from_a_child():
    proc = subprocess.run([sys.executable, "-c", PANEL_OPEN], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch_loaded"] is False, "torch was imported in the panel's process"
    assert report["models"] >= 1
    assert report["before"] == [["Automatic (GPU if available)", "auto"], ["CPU", "cpu"]]
    assert report["started"] is True and report["error"] == ""
    answered = report["answered"]
    assert answered[0] == ["Automatic (GPU if available)", "auto"] and answered[-1] == ["CPU", "cpu"]
    assert all(spec.startswith("cuda:") for _, spec in answered[1:-1])
    assert report["again"] is False  # answered once: not asked again this session


def test_the_device_query_child_reports_the_installed_torch():
    from NSLFSlicerLib.engine import device_query_command
    from NSLFSlicerLib.process_runner import ProcessRunner

    runner = ProcessRunner(device_query_command()).start()
    runner.wait(120)
    assert runner.succeeded, runner.failure_message()
    assert runner.result["torch"] == importlib.metadata.version("torch")


class FakeRunner:
    def __init__(self, result=None, code=0):
        self.result, self.code, self.finished = result, code, False

    def poll(self):
        return []

    @property
    def succeeded(self):
        return self.finished and self.code == 0

    def failure_message(self):
        return f"exit code {self.code}"


def test_devices_are_asked_for_once_torch_is_installed_and_a_failed_query_keeps_the_defaults():
    installed, runners = [False], []

    def start():
        runners.append(FakeRunner({"devices": [["Automatic (GPU if available)", "auto"], ["GPU 0: X (8 GiB)", "cuda:0"],
                                               ["CPU", "cpu"]]}, code=1 if not runners else 0))  # fmt: skip
        return runners[-1]

    devices = DeviceList(start, torch_installed=lambda: installed[0])
    assert devices.refresh() is False and devices.choices == [("Automatic (GPU if available)", "auto"), ("CPU", "cpu")]
    installed[0] = True  # the dependency step installed torch
    assert devices.refresh() is True and devices.busy and devices.refresh() is False
    assert devices.poll() is None  # still running
    runners[-1].finished = True
    assert devices.poll() is None and devices.error == "exit code 1" and not devices.busy  # failed: defaults kept
    assert len(devices.choices) == 2
    assert devices.refresh() is True
    runners[-1].finished = True
    assert devices.poll() == [("Automatic (GPU if available)", "auto"), ("GPU 0: X (8 GiB)", "cuda:0"), ("CPU", "cpu")]
    assert devices.refresh() is False and len(runners) == 2


def test_the_widget_never_lists_devices_itself():
    """Only the child calls :func:`NSLFSlicerLib.engine.device_choices` (it imports torch)."""
    tree = ast.parse((MODULE / "NSLFSlicer.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "device_choices" not in names and "device_query_command" in names


def test_a_device_query_that_cannot_start_leaves_the_panel_open_with_the_defaults():
    def start():
        raise FileNotFoundError("PythonSlicer was not found on PATH; reinstall 3D Slicer.")

    devices = DeviceList(start, torch_installed=lambda: True)
    assert devices.refresh() is False and not devices.busy and devices.poll() is None
    assert devices.error.startswith("PythonSlicer was not found") and len(devices.choices) == 2
