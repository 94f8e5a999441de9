"""The panel's decisions (NSLFSlicerLib.panel_state) and the orderings the widget must keep.

Each case was a defect found by reading the widget against Slicer's source: a saved device
overwritten while its combo box filled, a model selection indexing the previous list, a dataset
read in the GUI thread on every keystroke, "." in empty path fields, Start enabled without a
dataset, "Show 3D" left off after a segmentation run, the worker falling back to the Slicer
executable itself. The Qt-free parts are tested here directly; the widget's wiring order is read
from ``NSLFSlicer.py``'s syntax tree (the widget needs Slicer's Qt application to run).
"""

from __future__ import annotations

import ast
import os
import pathlib
import sys
import threading
from pathlib import Path

import pytest

from NSLFSlicerLib.panel_state import (
    ChoiceList,
    DatasetChecker,
    Show3DPreference,
    can_start_training,
    path_text,
    restore_index,
)
from NSLFSlicerLib.process_runner import child_process_options, python_executable

WIDGET = Path(__file__).resolve().parents[2] / "NSLFSlicer" / "NSLFSlicer.py"


def test_empty_paths_are_empty_and_start_needs_both_folders():
    assert path_text(None) == path_text("") == path_text(pathlib.Path("")) == path_text(" . ") == ""
    assert str(pathlib.Path("")) == "."  # what the parameter node's empty Path printed before
    assert path_text(pathlib.Path("/data/brats")) == "/data/brats"
    assert not can_start_training("", "/runs/a", running=False)
    assert not can_start_training(pathlib.Path(""), "/runs/a", running=False)
    assert not can_start_training("/data", "", running=False)
    assert not can_start_training("/data", "/runs/a", running=True)
    assert can_start_training("/data", "/runs/a", running=False)


def test_saved_choice_is_restored_not_overwritten():
    devices = ["auto", "cuda:0", "cpu"]
    assert restore_index(devices, "cpu", "auto") == 2
    assert restore_index(devices, "cuda:3", "auto") == 0  # the saved GPU is gone: the default
    assert restore_index([], "cpu") == -1


def test_model_list_is_replaced_before_the_selection_fires():
    models = ChoiceList(key=str.lower)
    assert models.replace(["A", "B", "C"], wanted="c") == 2
    assert models.at(2) == "C"  # what a currentIndexChanged(2) fired during the refill must see
    index = models.replace(["A", "C"], wanted="b")  # B removed: the first model, and the list is the new one
    assert index == 0 and models.at(1) == "C" and models.at(5) is None and models.at(-1) is None


def test_show_3d_is_on_after_segmentation_unless_turned_off():
    pref = Show3DPreference()
    assert pref.after_segmentation()
    pref.user_toggled(False)
    assert not pref.after_segmentation()
    pref.user_toggled(True)
    assert pref.after_segmentation()


class _Result:
    def __init__(self, path: str) -> None:
        self.path = path

    def message(self) -> str:
        return f"checked {self.path}"


def test_dataset_is_checked_once_after_typing_stops_and_off_the_calling_thread(tmp_path):
    calls: list[tuple[str, str]] = []
    release = threading.Event()

    def check(path: str) -> _Result:
        calls.append((path, threading.current_thread().name))
        release.wait(5)
        return _Result(path)

    checker = DatasetChecker(check, delay_s=0.5)
    for i, partial in enumerate(["/d", "/da", "/dat", str(tmp_path)]):  # keystrokes 0.1 s apart
        checker.path_changed(partial, now=10.0 + 0.1 * i)
        assert checker.poll(now=10.0 + 0.1 * i) is None
    assert calls == [] and checker.busy
    assert checker.poll(now=10.7) is None  # 0.4 s after the last keystroke: not yet
    assert checker.poll(now=10.85) is None  # started, still running (the GUI goes on)
    release.set()
    for _ in range(100):
        result = checker.poll(now=11.0)
        if result is not None:
            break
        threading.Event().wait(0.02)
    assert result == (str(tmp_path), f"checked {tmp_path}")
    assert [path for path, _ in calls] == [str(tmp_path)]  # one check, of the final path
    assert calls[0][1].startswith("nslf-dataset-check") and calls[0][1] != threading.current_thread().name
    assert not checker.busy
    checker.path_changed("", now=20.0)
    assert checker.poll(now=21.0) == ("", "Choose the folder that holds the training cases.")
    checker.shutdown()


def test_a_result_for_a_path_changed_meanwhile_is_dropped():
    release = threading.Event()
    checker = DatasetChecker(lambda p: (release.wait(5), _Result(p))[1], delay_s=0.0)
    checker.path_changed("/old", now=0.0)
    assert checker.poll(now=0.0) is None  # /old is being checked
    checker.path_changed("/new", now=1.0)
    release.set()
    results = []
    for _ in range(200):
        result = checker.poll(now=2.0)
        if result is not None:
            results.append(result)
            break
        threading.Event().wait(0.02)
    assert results == [("/new", "checked /new")]
    checker.shutdown()


def test_worker_never_falls_back_to_the_slicer_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no PythonSlicer anywhere
    monkeypatch.setattr(sys, "executable", str(tmp_path / "Slicer"))
    with pytest.raises(FileNotFoundError, match="PythonSlicer was not found"):
        python_executable(in_slicer=True)
    assert python_executable(in_slicer=False) == str(tmp_path / "Slicer")  # plain Python: itself
    (tmp_path / "PythonSlicer").write_text("#!/bin/sh\n")
    (tmp_path / "PythonSlicer").chmod(0o755)
    assert python_executable(in_slicer=True) == str(tmp_path / "PythonSlicer")


def test_children_get_their_own_process_group_and_no_console_window():
    options = child_process_options()
    if os.name == "nt":
        import subprocess

        assert options["creationflags"] & subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
    else:
        assert options == {"start_new_session": True}


def _calls_in(function: ast.FunctionDef) -> list[str]:
    """Source text of every call in ``function``'s body, in source order."""
    return [ast.unparse(node) for node in ast.walk(function) if isinstance(node, ast.Call)]


def _method(name: str) -> ast.FunctionDef:
    tree = ast.parse(WIDGET.read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NSLFSlicerWidget")
    return next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _line_of(function: ast.FunctionDef, text: str) -> int:
    lines = [n.lineno for n in ast.walk(function) if isinstance(n, ast.Call) and text in ast.unparse(n)]
    assert lines, f"{function.name} has no call containing {text!r}"
    return min(lines)


def test_widget_connects_saving_signals_only_after_filling_and_restoring():
    setup = _method("setup")
    assert _line_of(setup, "self.fillDevices()") < _line_of(setup, 'u.deviceComboBox.connect(\'currentIndexChanged(int)\'')
    fill = _method("fillDevices")  # also refills when the device query answers: with the signals blocked
    steps = ("combo.blockSignals(True)", "combo.addItem(label, spec)", "restore_index(", "combo.blockSignals(False)")
    block, add, restore, unblock = (_line_of(fill, step) for step in steps)
    assert block < add < restore < unblock
    assert _line_of(setup, "self.refreshModels()") < _line_of(setup, "u.modelComboBox.connect(")
    refresh = _method("refreshModels")
    assert _line_of(refresh, "self.models.replace(") < _line_of(refresh, "combo.addItem(")
    assert not any("check_dataset(" in call for call in _calls_in(_method("onTrainingDataChanged")))
    assert any("self.show3D.after_segmentation()" in call for call in _calls_in(_method("pollJob")))


def test_user_visible_strings_go_through_slicers_translation_function():
    """Titles, dialogs, status texts and self-test messages: ``_()``/``translate()``, never a bare literal."""
    tree = ast.parse(WIDGET.read_text())
    shown = {"errorDisplay", "tryWithErrorDisplay", "confirmYesNoDisplay", "confirmOkCancelDisplay", "delayDisplay",
             "startJob", "setRunning", "warningDisplay", "infoDisplay"}  # fmt: skip
    bare = []
    for node in ast.walk(tree):
        literals = []
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in shown:
                literals = [a for a in node.args if isinstance(a, (ast.Constant, ast.JoinedStr))]
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            if node.targets[0].attr in ("text", "title", "helpText", "acknowledgementText"):
                value = node.value
                parts = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
                literals = [v for v in parts if isinstance(v, ast.JoinedStr) or (isinstance(v, ast.Constant) and v.value)]
        bare += [f"line {lit.lineno}: {ast.unparse(lit)[:60]}" for lit in literals if isinstance(lit.value if isinstance(lit, ast.Constant) else "", str)]
    assert bare == [], bare
    assert "from slicer.i18n import tr as _" in WIDGET.read_text()
