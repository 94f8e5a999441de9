"""What the run buttons accept and what a run writes on the GUI thread, against real MRML (issue 33).

* Fuse / Segment are enabled only for inputs that can run: at least three of the four, and an output
  volume that is not one of them (:func:`NSLFSlicerLib.panel_state.run_blocker`, the buttons' tooltip).
* An input chosen as the output volume is refused by the logic and the background run before
  anything is computed or written, so it is never overwritten.
* The inputs a background run hands to its child, and a raw exam's files, are uncompressed NIfTI:
  gzip on Slicer's GUI thread took ten times as long as the write.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.checks import InputError
from NSLFSlicerLib.mrml_io import array_view
from NSLFSlicerLib.panel_state import run_blocker

ROOT = Path(__file__).resolve().parents[2]


def uncompressed_nifti(path: Path) -> bool:
    head = path.read_bytes()[:348]
    return path.suffix == ".nii" and head[:2] != b"\x1f\x8b" and head[344:348] == b"n+1\x00"


def test_run_buttons_need_three_inputs_and_an_output_that_is_not_one_of_them(small_inputs):
    logic, nodes = small_inputs
    assert run_blocker(nodes, None) == ""
    assert run_blocker({**nodes, "t2": None}, None) == ""  # any three work
    two = run_blocker({**nodes, "t2": None, "flair": None}, None)
    assert two.startswith("No T2 and FLAIR volume was given") and "at least 3" in two
    output = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fused")
    assert run_blocker(nodes, output) == ""
    chosen = run_blocker(nodes, nodes["t1ce"])
    assert chosen == (f"The T1ce input '{nodes['t1ce'].GetName()}' is also chosen as the output volume and would be "
                      "overwritten; choose another output volume or '(create new)'.")  # fmt: skip


def test_an_input_chosen_as_the_output_is_refused_before_anything_runs(small_inputs, tmp_path):
    logic, nodes = small_inputs
    before = array_view(nodes["t1"]).copy()
    count = logic.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="is also chosen as the output volume"):
        BackgroundRun(logic, **nodes, outputVolume=nodes["t1"], device="cpu", workdir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written, no child started
    with pytest.raises(InputError, match="is also chosen as the output volume"):
        logic.process(**nodes, outputVolume=nodes["t1"], device="cpu")
    assert np.array_equal(array_view(nodes["t1"]), before) and logic.scene.GetNumberOfNodes() == count


@pytest.mark.parametrize("preprocess", [False, True])
def test_a_background_runs_inputs_are_written_uncompressed(small_inputs, tmp_path, preprocess):
    logic, nodes = small_inputs
    job = BackgroundRun(logic, **nodes, device="cpu", workdir=tmp_path, preprocess=preprocess)  # written, not started
    try:
        inputs = json.loads((job.folder / "job.json").read_text())["inputs"]
        assert sorted(inputs) == ["flair", "t1", "t1ce", "t2"]
        assert all(uncompressed_nifti(Path(path)) for path in inputs.values()), inputs
    finally:
        job.cleanup()


def test_the_widget_follows_the_blocker_and_the_worker_writes_uncompressed_results():
    source = (ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text()
    assert "self.runBlocker = run_blocker(nodes, p.outputVolume)" in source
    assert "button.enabled = button is active if self.job is not None else not self.runBlocker" in source
    worker = (ROOT / "NSLFSlicer" / "NSLFSlicerLib" / "inference_worker.py").read_text()
    assert 'out / "fused.nii", np.float32' in worker and 'out / "labels.nii", np.uint8' in worker


def test_a_worker_that_crashes_after_sending_its_result_still_delivers_it(small_inputs, tmp_path):
    """A child that aborts on the way out (a CUDA or OpenMP teardown) after its result line: the result is imported."""
    import sys

    from nslfcore.data.io import write_image
    from NSLFSlicerLib.mrml_io import geometry_of
    from NSLFSlicerLib.process_runner import ProcessRunner

    logic, nodes = small_inputs
    job = BackgroundRun(logic, **nodes, device="cpu", workdir=tmp_path)  # inputs written, no child yet
    fused = np.linspace(0, 1, array_view(nodes["t1"]).size, dtype=np.float32).reshape(array_view(nodes["t1"]).shape)
    path = write_image(fused, geometry_of(nodes["t1"]), job.folder / "results" / "fused.nii", np.float32)
    line = json.dumps({"result": {"fused": str(path), "labels": None, "missing": None, "message": ""}})
    job.runner = ProcessRunner([sys.executable, "-c", f"import os; print({line!r}, flush=True); os.abort()"])
    job.start()
    job.runner.wait(60)
    assert job.runner.returncode != 0 and not job.runner.succeeded and job.runner.delivered
    outputs = job.finish()
    assert np.allclose(array_view(outputs.fused), fused) and not job.folder.exists()
