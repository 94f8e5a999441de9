"""Test-time mirroring and the case's confidence in the module: logic, volumes table, background run, panel line."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.logic import NSLFLogicCore
from NSLFSlicerLib.panel_state import confidence_text
from NSLFSlicerLib.tables import COLUMNS, CONFIDENCE_COLUMNS, confidence_values, table_confidence, table_rows
from NSLFSlicerLib.testing import load_case_nodes

from nslfcore.inference import DEFAULT_MIRROR, MIRRORS, Confidence

SOURCE = Path(__file__).resolve().parents[2] / "NSLFSlicer" / "NSLFSlicer.py"


def _columns(table_node) -> list[str]:
    table = table_node.GetTable()
    return [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]


def test_the_default_run_puts_the_entropy_in_the_table_and_no_agreement(scenario):
    confidence = scenario.outputs.confidence
    assert isinstance(confidence, Confidence) and confidence.passes == 1 and confidence.agreement is None
    assert _columns(scenario.outputs.table) == [*COLUMNS, *CONFIDENCE_COLUMNS]
    agreement, entropy, flag = table_confidence(scenario.outputs.table)
    assert math.isnan(agreement) and entropy == pytest.approx(confidence.mean_entropy)
    assert flag == ("low" if confidence.low else "ok")


def test_lr_mirroring_goes_through_the_logic_into_the_outputs_and_the_table(scenario):
    logic = NSLFLogicCore()
    nodes = load_case_nodes(logic.context, scenario.case_dir)
    outputs = logic.process(**nodes, model=str(scenario.model_path), device="cpu", mirror="lr")
    confidence = outputs.confidence
    assert confidence.passes == 2 and 0.0 <= confidence.agreement <= 1.0 and 0.0 <= confidence.mean_entropy <= 1.0
    table = outputs.table.GetTable()
    for row in range(table.GetNumberOfRows()):  # the case's values on every region's row
        values = (table.GetValue(row, len(COLUMNS)).ToDouble(), table.GetValue(row, len(COLUMNS) + 1).ToDouble(),
                  table.GetValue(row, len(COLUMNS) + 2).ToString())  # fmt: skip
        assert values[0] == pytest.approx(confidence_values(confidence)[0]) and values[2] == confidence_values(confidence)[2]
        assert values[1] == pytest.approx(confidence.mean_entropy)
    assert set(table_rows(outputs.table)) == {"NCR", "ED", "ET", "TC", "WT"}  # the regions are as before
    # A random network: the mirrored passes are unsure; the table says low, as the panel line does.
    assert confidence.low and table_confidence(outputs.table)[2] == "low"
    fused_only = logic.process(**nodes, model=str(scenario.model_path), device="cpu", segment=False, mirror="lr")
    assert fused_only.confidence is None and fused_only.table is None


def test_a_background_run_brings_the_same_confidence_back(scenario, tmp_path):
    logic = NSLFLogicCore()
    nodes = load_case_nodes(logic.context, scenario.case_dir)
    blocking = logic.process(**nodes, model=str(scenario.model_path), device="cpu", mirror="lr").confidence
    job = BackgroundRun(logic, **nodes, model=str(scenario.model_path), device="cpu", mirror="lr", workdir=tmp_path).start()
    outputs = job.wait(300)
    assert isinstance(outputs.confidence, Confidence) and outputs.confidence.passes == 2
    assert outputs.confidence.agreement == pytest.approx(blocking.agreement, abs=1e-6)
    assert outputs.confidence.mean_entropy == pytest.approx(blocking.mean_entropy, abs=1e-6)
    assert table_confidence(outputs.table)[2] == ("low" if blocking.low else "ok")


def test_the_panel_line_is_plain_and_warns_only_when_low():
    assert confidence_text(None) == ("", False)
    text, warn = confidence_text(Confidence(0.97, 0.12, 2, 1000))
    assert not warn
    assert text == "Confidence: agreement 0.97 (2 mirrored passes), mean entropy 0.12 in the predicted tumour (1000 voxels)."
    text, warn = confidence_text(Confidence(0.6, 0.12, 2, 1000))
    assert warn and "(1000 voxels). Low confidence: mirrored passes agree only to Dice 0.60;" in text
    assert text.endswith("check the segmentation by eye before using it.")


def test_the_panel_offers_the_engines_mirroring_choices_with_its_default():
    tree = ast.parse(SOURCE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NSLFSlicerParameterNode")
    field = next(n for n in cls.body if isinstance(n, ast.AnnAssign) and n.target.id == "mirror")
    choices = next(n for n in ast.walk(field.annotation) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Choice")
    assert tuple(ast.literal_eval(choices.args[0])) == MIRRORS
    assert ast.literal_eval(field.value) == DEFAULT_MIRROR
