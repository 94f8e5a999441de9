"""Three of the four inputs (issue 31 point 2) against real MRML: the logic, a background run, the batch
script and the panel's status line run with one sequence left out and say what that costs."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.checks import InputError, reference_modality
from NSLFSlicerLib.logic import NSLFLogicCore
from NSLFSlicerLib.mrml_io import array_view, ijk_to_ras
from NSLFSlicerLib.panel_state import finished_status
from NSLFSlicerLib.testing import _labels_of, check_outputs, load_case_nodes, put_in_study

from nslfcore.inference.missing import missing_sentence

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "NSLFSlicer" / "Scripts" / "nslf_batch.py"


@pytest.fixture(scope="module")
def without_flair(scenario):
    """The blocking logic on T1, T1ce and T2 (FLAIR left empty), run once for this module."""
    logic = NSLFLogicCore()
    nodes = load_case_nodes(logic.context, scenario.case_dir)
    put_in_study(nodes)
    nodes["flair"] = None
    outputs = logic.process(**nodes, model=str(scenario.model_path), device="cpu")
    return logic, nodes, outputs


def test_the_logic_runs_on_three_inputs_and_says_what_the_missing_one_costs(without_flair, scenario):
    logic, nodes, outputs = without_flair
    check_outputs({m: n for m, n in nodes.items() if n is not None}, outputs, _labels_of(logic, outputs, nodes))
    assert outputs.missing == "flair"
    assert outputs.message == missing_sentence("flair", scenario.model_path.stem)
    assert outputs.message.startswith("FLAIR is missing: fused and segmented from T1, T1ce and T2;")
    with_four = scenario.outputs  # the same case with FLAIR: other weights, so another fused volume
    assert not np.allclose(array_view(outputs.fused), array_view(with_four.fused))


def test_without_t1_the_results_take_the_t1ce_grid_and_name(fresh_inputs, scenario):
    logic, nodes = fresh_inputs
    nodes["t1"] = None
    assert reference_modality(nodes) == "t1ce"
    outputs = logic.fuse(**nodes, model=str(scenario.model_path), device="cpu")
    assert np.array_equal(ijk_to_ras(outputs), ijk_to_ras(nodes["t1ce"]))
    assert outputs.GetImageData().GetDimensions() == nodes["t1ce"].GetImageData().GetDimensions()
    assert outputs.GetName() == "BraTS2021_00000 NSLF fused"


def test_two_empty_inputs_are_refused_in_one_sentence_and_the_scene_is_unchanged(fresh_inputs):
    logic, nodes = fresh_inputs
    count = logic.scene.GetNumberOfNodes()
    with pytest.raises(InputError) as error:
        logic.process(**{**nodes, "t2": None, "flair": None}, model=None, device="cpu")
    assert error.value.problems == [
        "No T2 and FLAIR volume was given; NSLF needs at least 3 of T1, T1ce, T2 and FLAIR, so select the missing input volumes."
    ]
    assert logic.scene.GetNumberOfNodes() == count


def test_a_background_run_on_three_inputs_gives_the_blocking_results_and_the_sentence(
    fresh_inputs, without_flair, scenario, tmp_path
):
    logic, nodes = fresh_inputs
    nodes["flair"] = None
    job = BackgroundRun(logic, **nodes, model=str(scenario.model_path), device="cpu", workdir=tmp_path).start()
    deadline = time.monotonic() + 300
    while not job.finished:
        assert time.monotonic() < deadline, "the background run did not finish"
        job.poll()
        time.sleep(0.05)
    outputs = job.finish()
    blocking_logic, blocking_nodes, blocking = without_flair
    assert outputs.missing == "flair" and outputs.message == blocking.message
    assert np.array_equal(_labels_of(logic, outputs, nodes), _labels_of(blocking_logic, blocking, blocking_nodes))
    assert np.allclose(array_view(outputs.fused), array_view(blocking.fused), atol=1e-6)
    assert finished_status("Done in 3 s.", outputs.message) == f"Done in 3 s. {blocking.message}"
    assert finished_status("Done in 3 s.", "") == "Done in 3 s."


def test_the_panel_shows_the_sentence_in_the_status_line_and_the_log():
    tree = ast.parse((ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text())
    poll = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "pollJob")
    source = ast.unparse(poll)
    assert "self.ui.statusLabel.text = finished_status(done, outputs.message)" in source
    assert "self.ui.logTextEdit.appendPlainText(outputs.message)" in source


def test_the_batch_script_processes_a_case_folder_lacking_one_file_and_prints_the_sentence(scenario, tmp_path):
    case = Path(shutil.copytree(scenario.case_dir, tmp_path / scenario.case_dir.name))
    next(case.glob("*_t2.nii.gz")).unlink()
    out = tmp_path / "out"
    args = [sys.executable, str(SCRIPT), "--case", str(case), "--out", str(out), "--model", str(scenario.model_path),
            "--device", "cpu", "--no-render"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert missing_sentence("t2", scenario.model_path.stem) in proc.stdout
    for name in ("fused.nii.gz", "segmentation.seg.nrrd", "labels.nii.gz", "tumor_volumes.csv", "scene.mrb"):
        assert (out / name).stat().st_size > 0, name
    next(case.glob("*_flair.nii.gz")).unlink()
    refused = subprocess.run([*args[:5], str(tmp_path / "out2"), *args[6:]], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "no t2 or flair file; NSLF needs at least 3 of the four sequences" in refused.stdout
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())
