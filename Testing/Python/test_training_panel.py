"""The training panel's engine: event reader, progress, live plots on real MRML plot nodes, dataset check, start/stop/resume."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import slicer
from NSLFSlicerLib.app_setup import create_standalone_context
from NSLFSlicerLib.training_events import EventReader, EventSchemaError, TrainingProgress
from NSLFSlicerLib.training_job import TrainingJob, TrainingSettings, check_dataset
from NSLFSlicerLib.training_plot import TrainingPlots

from nslfcore.data.phantom import write_phantom_dataset
from nslfcore.training.events import EventWriter


def events_of(*specs):
    """Valid events (through the engine's own writer) for ``(kind, fields)`` specs."""
    writer = EventWriter(None)
    return [writer.emit(kind, **fields) for kind, fields in specs]


def iteration(stage, step, **losses):
    return ("iteration", dict(stage=stage, epoch=1 + step // 10, step=step, losses=losses, lr=1e-4, samples_per_s=1.0,
                              eta_s=100.0 - step, progress=step / 20))  # fmt: skip


def test_reader_waits_for_partial_lines_and_skips_malformed_ones(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    first, second = (json.dumps(e) for e in events_of(iteration(1, 1, total=1.0), iteration(1, 2, total=0.9)))
    reader = EventReader(path)
    assert reader.read() == []  # no file yet
    path.write_text(first + "\n" + second[:25])
    assert [e["step"] for e in reader.read()] == [1]
    with path.open("a") as handle:
        handle.write(second[25:] + "\n{not json\n\n")
    with caplog.at_level(logging.WARNING):
        assert [e["step"] for e in reader.read()] == [2]
    assert reader.skipped == 1 and "malformed" in caplog.text
    assert reader.read() == []


def test_reader_refuses_schema_drift(tmp_path):
    path = tmp_path / "events.jsonl"
    event = events_of(iteration(1, 1, total=1.0))[0]
    path.write_text(json.dumps(event | {"schema": 2}) + "\n")
    with pytest.raises(EventSchemaError, match="update the NSLFSlicer extension"):
        EventReader(path).read()
    path.write_text(json.dumps({k: v for k, v in event.items() if k != "losses"}) + "\n")
    with pytest.raises(EventSchemaError, match="losses"):
        EventReader(path).read()


def test_progress_folds_the_events():
    progress = TrainingProgress()
    progress.update(events_of(
        ("run_start", dict(run_dir="r", stages=[2, 3], config={}, data={}, device="cpu", world_size=1, resume=False)),
        ("stage_start", dict(stage=3, epochs=4, steps_per_epoch=5, start_epoch=0)),
        iteration(3, 10, total=0.5, ce=0.3),
        ("stage_end", dict(stage=3, epochs_run=4, best_metric=0.4, best_checkpoint="r/stage3_best.pt")),
    ))  # fmt: skip
    assert progress.stage == 3 and progress.fraction == pytest.approx(1.0) and progress.best_checkpoint == "r/stage3_best.pt"
    progress.stage_progress = 0.5
    assert progress.fraction == pytest.approx(0.75)
    assert "stage 3, epoch 2/4, loss 0.5000" in progress.summary()


def test_plots_on_real_mrml_plot_nodes():
    scene = create_standalone_context().scene
    plots = TrainingPlots(scene)
    plots.update(events_of(*(iteration(1, s, reconstruction=0.1 / s, contrastive=1.0 / s, total=1.1 / s) for s in range(1, 6))))
    plots.update(events_of(("validation", dict(stage=1, epoch=1, metrics={"loss": 0.3, "train_loss": 0.5}))))
    plots.update(events_of(iteration(3, 1, ce=0.7, dice=0.6, total=1.3), ("validation", dict(
        stage=3, epoch=1, metrics={"loss": 0.9, "dice_et": 0.2, "dice_tc": 0.3, "dice_wt": 0.5}))))  # fmt: skip
    table = plots.tables[1].GetTable()
    assert table.GetNumberOfRows() == 5
    steps = [table.GetColumnByName("step").GetValue(i) for i in range(5)]
    assert steps == [1, 2, 3, 4, 5] and table.GetColumnByName("contrastive").GetValue(3) == pytest.approx(0.25)
    chart = plots.charts[1]
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 3
    series = scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(0))
    assert series.IsA("vtkMRMLPlotSeriesNode") and series.GetTableNode() is plots.tables[1]
    assert series.GetXColumnName() == "step" and series.GetYColumnName() == "reconstruction"
    validation = plots.validation_table.GetTable()
    assert validation.GetNumberOfRows() == 2
    assert np.isnan(validation.GetColumnByName("stage 3 dice_wt").GetValue(0))
    assert validation.GetColumnByName("stage 3 dice_wt").GetValue(1) == pytest.approx(0.5)
    names = {scene.GetNodeByID(plots.validation_chart.GetNthPlotSeriesNodeID(i)).GetYColumnName()
             for i in range(plots.validation_chart.GetNumberOfPlotSeriesNodes())}  # fmt: skip
    assert names == {"stage 1 loss", "stage 3 loss", "stage 3 dice_et", "stage 3 dice_tc", "stage 3 dice_wt"}
    count = scene.GetNumberOfNodes()
    created = len(plots.nodes())
    plots.clear()
    assert scene.GetNumberOfNodes() == count - created and not plots.nodes()


def test_dataset_check_counts_complete_cases_and_lists_problems(tmp_path):
    good = tmp_path / "good"
    write_phantom_dataset(good, 3, seed=4, tiny=True, size=(16, 16, 16))
    check = check_dataset(good)
    assert (check.complete, check.incomplete, check.rejected, check.problems) == (3, 0, 0, [])
    assert check.usable and check.message() == "3 complete case(s)."
    next((good / "BraTS2021_00001").glob("*_flair.nii.gz")).unlink()
    next((good / "BraTS2021_00002").glob("*_t2.nii.gz")).write_bytes(b"broken")
    check = check_dataset(good)
    assert (check.complete, check.incomplete, check.rejected) == (1, 1, 1) and not check.usable
    message = check.message()
    assert "BraTS2021_00001" in message and "flair" in message and "BraTS2021_00002" in message and "at least 2" in message
    assert "not a folder" in check_dataset(tmp_path / "absent").message()


def test_settings_are_checked_and_give_the_nslf_train_command(tmp_path):
    settings = TrainingSettings(str(tmp_path / "data"), str(tmp_path / "run"), stage="3", epochs=2, lr=5e-4,
                                segmentation_crop=(32, 64, 64))  # fmt: skip
    command = settings.command(resume=True)
    assert command[1:4] == ["-m", "nslfcore.cli", "train"] and command[-1] == "--resume"
    assert command[command.index("--segmentation-crop") + 1 : command.index("--segmentation-crop") + 4] == ["32", "64", "64"]
    assert command[command.index("--events") + 1] == str(tmp_path / "run" / "events.jsonl")
    assert "--init" not in command
    tuned = settings.replace(init=str(tmp_path / "model.pt")).command()
    assert tuned[tuned.index("--init") + 1] == str(tmp_path / "model.pt")
    for bad in (dict(stage="4"), dict(epochs=0), dict(fusion_crop=(30, 64, 64))):
        with pytest.raises(ValueError):
            TrainingSettings("d", "r", **bad)


def run_until(job: TrainingJob, condition, timeout: float = 300) -> list:
    events, deadline = [], time.monotonic() + timeout
    while not condition(events):
        assert time.monotonic() < deadline, f"timed out; log: {job.log_tail()}"
        events += job.poll()
        time.sleep(0.1)
    return events


def test_start_stop_resume_with_live_plots(tmp_path):
    data = tmp_path / "data"
    write_phantom_dataset(data, 3, seed=5, tiny=True, size=(32, 32, 32))
    settings = TrainingSettings(str(data), str(tmp_path / "run"), stage="1", epochs=3, lr=1e-3,
                                fusion_crop=(32, 32, 32), device="cpu")  # fmt: skip
    plots = TrainingPlots(create_standalone_context().scene)
    job = TrainingJob(settings).start()
    events = run_until(job, lambda ev: any(e["event"] == "iteration" for e in ev))
    job.stop()  # graceful: finish the step, checkpoint, exit
    events += run_until(job, lambda ev: job.finished)
    events += job.poll()
    plots.update(events)
    assert job.progress.status == "stopped" and job.failure_message() is None
    assert (tmp_path / "run" / "stage1.pt").is_file()
    stopped_at = max(e["step"] for e in events if e["event"] == "iteration")
    job = TrainingJob(settings).resume()
    resumed = run_until(job, lambda ev: job.finished)
    resumed += job.poll()
    plots.update(resumed)
    assert job.progress.status == "completed" and job.progress.best_checkpoint.endswith("stage1_best.pt")
    steps = [e["step"] for e in resumed if e["event"] == "iteration"]
    assert steps and steps[0] == stopped_at + 1 and steps[-1] == 3 * 2  # 3 epochs of 2 training cases
    table = plots.tables[1].GetTable()
    assert table.GetNumberOfRows() == len(steps) + stopped_at


assert slicer
