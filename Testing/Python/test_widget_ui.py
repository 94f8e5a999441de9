"""The thin widget against its .ui file (names, classes, parameter bindings), the CMake lists, and a torch-free start-up.

The widget itself needs Slicer's Qt application, which CI does not have; everything it does beyond
wiring lives in NSLFSlicerLib and is tested elsewhere. These tests pin the wiring.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "NSLFSlicer"
UI = MODULE / "Resources" / "UI" / "NSLFSlicer.ui"
SOURCE = MODULE / "NSLFSlicer.py"

#: Widget-name endings and the classes they must have (longest ending first).
CLASS_BY_SUFFIX = (
    ("CollapsibleButton", {"ctkCollapsibleButton"}), ("PathLineEdit", {"ctkPathLineEdit"}), ("Selector", {"qMRMLNodeComboBox"}),
    ("Button", {"QPushButton"}), ("ComboBox", {"QComboBox"}), ("SpinBox", {"QSpinBox", "QDoubleSpinBox"}),
    ("LineEdit", {"QLineEdit"}), ("Label", {"QLabel"}), ("ProgressBar", {"QProgressBar"}), ("CheckBox", {"QCheckBox"}),
    ("TextEdit", {"QPlainTextEdit"}), ("TableWidget", {"QTableWidget"}),
)  # fmt: skip


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def names_used_by_widget_code() -> set[str]:
    """Attributes read from ``self.ui`` (or its alias ``u``) in NSLFSlicer.py."""
    tree = ast.parse(SOURCE.read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Attribute) and base.attr == "ui" and isinstance(base.value, ast.Name)
                    and base.value.id == "self") or (isinstance(base, ast.Name) and base.id == "u"):  # fmt: skip
                used.add(node.attr)
    return used


def parameter_fields() -> dict[str, str]:
    """Field -> annotation source of the @parameterNodeWrapper class."""
    tree = ast.parse(SOURCE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NSLFSlicerParameterNode")
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_every_widget_the_code_uses_exists_with_the_expected_class():
    widgets = ui_widgets()
    used = names_used_by_widget_code()
    assert len(used) >= 25, "the widget code's ui names were not found"
    for name in sorted(used):
        assert name in widgets, f"NSLFSlicer.py uses self.ui.{name}, which NSLFSlicer.ui does not define"
        expected = next((classes for suffix, classes in CLASS_BY_SUFFIX if name.lower().endswith(suffix.lower())), None)
        assert expected is not None, f"{name}: no naming rule; name widgets by their kind"
        assert widgets[name].get("class") in expected, f"{name} is a {widgets[name].get('class')}, expected {expected}"


def test_every_attribute_is_declared_with_a_type_in_init():
    """Widget and logic state is declared (annotated, with a default) in ``__init__``, never first made in setup() or a slot."""
    tree = ast.parse(SOURCE.read_text())

    def self_attribute(target: ast.expr) -> list[str]:
        if isinstance(target, ast.Tuple):
            return [name for element in target.elts for name in self_attribute(element)]
        is_self = isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
        return [target.attr] if is_self else []  # type: ignore[union-attr]

    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        declared = {t for n in ast.walk(init) if isinstance(n, ast.AnnAssign) and n.value is not None
                    for t in self_attribute(n.target)} if init else set()  # fmt: skip
        assigned = {t for n in ast.walk(cls) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign))
                    for target in getattr(n, "targets", [getattr(n, "target", None)]) for t in self_attribute(target)}  # fmt: skip
        assert not assigned - declared, f"{cls.name} sets {sorted(assigned - declared)} without declaring them in __init__"
        if cls.name == "NSLFSlicerWidget":
            assert {"ui", "runButtons", "job", "finishedTraining"} <= declared


def test_panel_has_what_the_issue_asks_for():
    widgets = ui_widgets()
    for name in ("t1Selector", "t1ceSelector", "t2Selector", "flairSelector", "modelComboBox", "deviceComboBox",
                 "outputVolumeSelector", "outputSegmentationSelector", "fuseButton", "segmentButton", "fuseSegmentButton",
                 "progressBar", "logTextEdit", "show3DButton", "loadSampleButton", "trainingDataPathLineEdit",
                 "runFolderPathLineEdit", "configComboBox", "stageComboBox", "epochsSpinBox", "learningRateSpinBox",
                 "startTrainingButton", "stopTrainingButton", "resumeTrainingButton", "addTrainedModelButton",
                 "modelsTableWidget", "addModelButton", "removeModelButton", "openModelsFolderButton", "downloadModelButton"):  # fmt: skip
        assert name in widgets, name
    collapsed = {w.get("name") for w in widgets.values() if any(
        p.get("name") == "collapsed" and p.findtext("bool") == "true" for p in w.findall("property"))}  # fmt: skip
    assert {"trainingCollapsibleButton", "logCollapsibleButton", "modelsCollapsibleButton"} <= collapsed
    outputs = [w for n, w in widgets.items() if n.startswith("output") and n.endswith("Selector")]
    assert all(w.find("property[@name='noneDisplay']/string").text == "(create new)" for w in outputs)


def test_parameter_bindings_match_the_parameter_node():
    fields = parameter_fields()
    bound = {}
    for name, widget in ui_widgets().items():
        prop = widget.find("property[@name='SlicerParameterName']")
        if prop is not None:
            assert prop.get("stdset") == "0", f"{name}: SlicerParameterName must be a dynamic property"
            bound[prop.findtext("string")] = widget.get("class")
    assert set(bound) == set(fields), f"unbound fields {set(fields) - set(bound)}, unknown bindings {set(bound) - set(fields)}"
    for field, annotation in fields.items():
        cls = bound[field]
        if annotation.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", field
        elif annotation == "pathlib.Path":
            assert cls == "ctkPathLineEdit", field
        elif "Choice" in annotation:
            assert cls == "QComboBox", field
        elif annotation == "bool":
            assert cls == "QCheckBox", field


def test_cmake_lists_every_script_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    for path in sorted((MODULE / "NSLFSlicerLib").glob("*.py")) + sorted((MODULE / "Scripts").glob("*.py")):
        entry = str(path.relative_to(MODULE)).replace("NSLFSlicerLib/", "${MODULE_NAME}Lib/")
        assert entry in cmake, f"{entry} is not listed in NSLFSlicer/CMakeLists.txt"
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui",
                     "Resources/Terminology/${MODULE_NAME}-BrainTumor.term.json"):  # fmt: skip
        assert resource in cmake


def test_the_stop_file_name_is_the_trainers():
    from NSLFSlicerLib.training_job import STOP_FILE

    from nslfcore.training.trainer import STOP_FILE as TRAINER_STOP_FILE

    assert STOP_FILE == TRAINER_STOP_FILE


@pytest.mark.parametrize("text, crop", [("64 160 160", (64, 160, 160)), ("32, 64, 64", (32, 64, 64)), ("48x112x112", (48, 112, 112))])
def test_crop_text_is_parsed(text, crop):
    from NSLFSlicerLib.training_job import parse_crop

    assert parse_crop(text) == crop


@pytest.mark.parametrize("text", ["64 160", "60 160 160", "a b c", ""])
def test_bad_crop_text_says_what_to_type(text):
    from NSLFSlicerLib.training_job import parse_crop

    with pytest.raises(ValueError, match="three multiples of 16"):
        parse_crop(text)


def test_eta_text():
    from NSLFSlicerLib.process_runner import format_eta

    assert format_eta(0.0, 5) == "0%"
    assert format_eta(0.5, 30) == "50% (about 30 s left)"
    assert format_eta(0.25, 600) == "25% (about 30 min left)"
    assert format_eta(1.0, 600) == "100%"


assert re
