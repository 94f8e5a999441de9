"""Closing the scene during a run, against real MRML (issue 33).

``vtkMRMLScene.Clear`` sends ``StartCloseEvent`` as File > Close Scene does. The logic then cancels
what runs on the scene's nodes (a blocking run at its next step, a background run's child at once),
results are never written against nodes that left the scene, and the training curves forget the
closed scene's nodes; a second training run starts its own tables instead of appending to the first's.
"""

from __future__ import annotations

import numpy as np
import pytest
from nslfcore.training.events import EventWriter
from NSLFSlicerLib.app_setup import create_standalone_context
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.checks import InputError
from NSLFSlicerLib.logic import Cancelled
from NSLFSlicerLib.mrml_io import array_view
from NSLFSlicerLib.training_plot import TrainingPlots


def written(scene) -> int:
    """Volume, segmentation and table nodes in ``scene``."""
    return sum(scene.GetNodesByClass(c).GetNumberOfItems() for c in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode",
                                                                       "vtkMRMLTableNode"))  # fmt: skip


def test_closing_the_scene_cancels_a_background_run_and_leaves_the_new_scene_empty(small_inputs, tmp_path):
    logic, nodes = small_inputs
    job = BackgroundRun(logic, **nodes, device="cpu", workdir=tmp_path).start()
    assert job.runner.running and logic._jobs == [job]
    logic.scene.Clear(0)
    assert job.runner.cancelled and job.runner.returncode is not None  # the child has ended
    assert logic._jobs == [] and not list(tmp_path.iterdir())  # no longer tracked, its files deleted
    assert written(logic.scene) == 0
    assert not job.runner.succeeded  # the panel shows "Cancelled." and never calls finish()


def test_closing_the_scene_cancels_a_blocking_run_at_its_next_step(small_inputs):
    logic, nodes = small_inputs
    steps = []

    def progress(fraction, message):
        steps.append(message)
        if len(steps) == 1:
            logic.scene.Clear(0)  # e.g. File > Close Scene while the console run processes events

    with pytest.raises(Cancelled):
        logic.process(**nodes, device="cpu", progressCallback=progress)
    assert steps == ["Checking inputs"]  # cancelled at the next step, before the model was loaded
    assert written(logic.scene) == 0


def test_results_are_never_written_against_removed_nodes(small_inputs):
    logic, nodes = small_inputs
    labels = np.zeros(array_view(nodes["t1"]).shape, np.uint8)
    fused = np.zeros(labels.shape, np.float32)
    logic.scene.RemoveNode(nodes["flair"])  # the user deleted FLAIR during the run
    count = logic.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=f"'{nodes['flair'].GetName()}' was removed from the scene during the run"):
        logic.writeResults(nodes, "case", fused, labels)
    assert logic.scene.GetNumberOfNodes() == count  # nothing written, no orphans
    output = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
    nodes = {m: n for m, n in nodes.items() if m != "flair"}
    logic.scene.Clear(0)  # the scene closed: inputs and the chosen output are gone
    with pytest.raises(InputError) as caught:
        logic.writeResults(nodes, "case", fused, None, volume=output)
    assert len(caught.value.problems) == 4 and "'chosen output' was removed" in str(caught.value)
    assert written(logic.scene) == 0


def losses(stage, *steps):
    writer = EventWriter(None)
    return [writer.emit("iteration", stage=stage, epoch=1, step=s, losses={"total": 1.0 / s}, lr=1e-4, samples_per_s=1.0,
                        eta_s=10.0, progress=s / 10) for s in steps]  # fmt: skip


def rows(plots, stage=1):
    return plots.tables[stage].GetTable().GetNumberOfRows()


def test_training_curves_forget_a_closed_scene_and_start_again_in_the_new_one():
    scene = create_standalone_context().scene
    plots = TrainingPlots(scene)
    plots.start_run("/runs/a")
    plots.update(losses(1, 1, 2, 3))
    assert rows(plots) == 3
    scene.Clear(0)
    assert plots.nodes() == []  # nothing refers to the removed nodes
    plots.update(losses(1, 4))
    assert rows(plots) == 1 and all(node.GetScene() is scene for node in plots.nodes())
    assert scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 1


def test_a_second_training_run_gets_its_own_tables_and_a_resumed_run_keeps_them():
    scene = create_standalone_context().scene
    plots = TrainingPlots(scene)
    plots.start_run("/runs/a")
    plots.update(losses(1, 1, 2, 3))
    plots.start_run("/runs/a", resume=True)  # Resume: the same curves go on
    plots.update(losses(1, 4))
    assert rows(plots) == 4
    plots.start_run("/runs/b")  # Start of another run: new curves, the first run's removed
    plots.update(losses(1, 1, 2))
    assert rows(plots) == 2
    assert scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 1
    assert scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() == 1
    plots.start_run("/runs/b")  # Start again in the same folder (a new training, not a resume): new curves too
    plots.update(losses(1, 1))
    assert rows(plots) == 1


def test_the_widget_starts_each_run_of_curves():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "NSLFSlicer" / "NSLFSlicer.py").read_text()
    assert "self.plots.start_run(settings.run_dir, resume)" in source
