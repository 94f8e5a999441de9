"""Live training curves as Slicer plots: MRML tables, plot series and charts updated from training events.

Per stage ``N``: table "NSLF stage N losses" (column ``step`` and one column per loss term, one row
per iteration event) and chart "NSLF training: stage N" with one line series per term. One table
"NSLF validation" (``stage``, ``epoch`` and every validation metric, one row per validation event)
feeds chart "NSLF validation": per stage the validation loss, and for stage 3 the Dice of ET, TC and
WT, against the epoch. Missing values are NaN. The nodes are ordinary MRML nodes, so the curves
show in any plot view and are saved with the scene.

One set of nodes per training run: :meth:`TrainingPlots.start_run` removes the previous run's
nodes unless the same run folder is resumed, so a second run never appends to the first one's
tables. When the scene closes, its nodes leave it; the plots notice that (a node of theirs no longer
in the scene) before they are used, forget them, and the next events create new ones in the new
scene. (No scene observer: a Python callback held by the scene and referring back to these plots
forms a cycle that the garbage collector may break after VTK has freed the scene, which crashes.)
"""

from __future__ import annotations

import math
from typing import Any

import slicer
import vtk

#: Line colours of the loss terms (cycled), RGB in [0, 1].
COLOURS = ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
           (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5))  # fmt: skip
VALIDATION_TABLE = "NSLF validation"
#: Validation metrics drawn as series (per stage): the loss, and the region Dice of stage 3.
SHOWN_VALIDATION = ("loss", "dice_et", "dice_tc", "dice_wt")
VALIDATION_CHART = "NSLF validation"


class TrainingPlots:
    """Creates and updates the training plot nodes of one run in ``scene`` (see the module docstring)."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.run_dir: str | None = None  # the run folder these curves belong to (start_run)
        self._forget()

    def _forget_if_closed(self) -> None:
        """Forget the nodes when one of them has left the scene (the scene was closed or the node removed)."""
        held = [*self.tables.values(), *self.charts.values(), *self.series.values(),
                *(n for n in (self.validation_table, self.validation_chart) if n is not None)]  # fmt: skip
        if any(node.GetScene() is not self.scene for node in held):
            self._forget()

    def _forget(self) -> None:
        """Drop every reference to the nodes (they are, or are about to be, out of the scene)."""
        self.tables: dict[int, Any] = {}
        self.charts: dict[int, Any] = {}
        self.validation_table: Any = None
        self.validation_chart: Any = None
        #: (table name, column) -> plot series node
        self.series: dict[tuple[str, str], Any] = {}

    # --------------------------------------------------------------------------------- updating
    def update(self, events: list[dict[str, Any]]) -> None:
        """Append the iteration and validation events to the tables (creating nodes as needed)."""
        self._forget_if_closed()
        for event in events:
            if event["event"] == "iteration":
                stage = event["stage"]
                values = {"step": float(event["step"])} | {k: _number(v) for k, v in event["losses"].items()}
                self._append(self._stage_table(stage), values, self._stage_chart(stage), "step", lambda name: name != "step")
            elif event["event"] == "validation":
                stage = event["stage"]
                metrics = {k: _number(v) for k, v in event["metrics"].items() if isinstance(v, (int, float, type(None)))}
                values = {"stage": float(stage), "epoch": float(event["epoch"])} | metrics
                values |= {f"stage {stage} {m}": metrics[m] for m in SHOWN_VALIDATION if m in metrics}
                self._append(self._validation_table(), values, self.validation_chart, "epoch",
                             lambda name: name.startswith("stage "))  # fmt: skip

    def _append(self, table_node: Any, values: dict[str, float], chart: Any, x: str, plotted: Any) -> None:
        """One row of ``values`` (NaN in the columns it lacks); a new column that ``plotted(name)`` accepts gets a series."""
        table = table_node.GetTable()
        rows = table.GetNumberOfRows()
        for name in values:
            if table.GetColumnByName(name) is None:
                column = vtk.vtkDoubleArray()
                column.SetName(name)
                for _ in range(rows):
                    column.InsertNextValue(math.nan)
                table.AddColumn(column)
                if plotted(name):
                    self._add_series(table_node, chart, x, name)
        for index in range(table.GetNumberOfColumns()):
            column = table.GetColumn(index)
            column.InsertNextValue(values.get(column.GetName(), math.nan))
        table.Modified()
        table_node.Modified()

    def _add_series(self, table_node: Any, chart: Any, x: str, y: str) -> Any:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{table_node.GetName()}: {y}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(x)
        series.SetYColumnName(y)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        series.SetColor(*COLOURS[len(self.series) % len(COLOURS)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.series[(table_node.GetName(), y)] = series
        return series

    # ------------------------------------------------------------------------------------ nodes
    def _stage_table(self, stage: int) -> Any:
        if stage not in self.tables:
            self.tables[stage] = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"NSLF stage {stage} losses")
        return self.tables[stage]

    def _stage_chart(self, stage: int) -> Any:
        if stage not in self.charts:
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"NSLF training: stage {stage}")
            chart.SetTitle(f"NSLF training, stage {stage}: loss terms")
            chart.SetXAxisTitle("optimiser step")
            chart.SetYAxisTitle("loss")
            self.charts[stage] = chart
        return self.charts[stage]

    def _validation_table(self) -> Any:
        if self.validation_table is None:
            self.validation_table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", VALIDATION_TABLE)
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", VALIDATION_CHART)
            chart.SetTitle("NSLF validation: loss per stage, Dice (stage 3)")
            chart.SetXAxisTitle("epoch")
            chart.SetYAxisTitle("value")
            self.validation_chart = chart
        return self.validation_table

    def nodes(self) -> list[Any]:
        """Every node these plots created that is still in the scene."""
        self._forget_if_closed()
        found = [*self.tables.values(), *self.charts.values(), *self.series.values()]
        return found + [n for n in (self.validation_table, self.validation_chart) if n is not None]

    def clear(self) -> None:
        """Remove every node these plots created from the scene."""
        for node in self.nodes():
            if node.GetScene() is self.scene:
                self.scene.RemoveNode(node)
        self._forget()

    def start_run(self, run_dir: str, resume: bool = False) -> None:
        """A training run starts: keep the curves only when ``run_dir``'s run is resumed, else start new ones."""
        if not (resume and run_dir == self.run_dir):
            self.clear()
        self.run_dir = run_dir


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
