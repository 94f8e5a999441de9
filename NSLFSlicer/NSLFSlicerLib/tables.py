"""The tumour volumes table: per region voxel count and volume in mL, and the case's confidence.

Regions (BraTS 2021 labels): NCR {1}, ED {2}, ET {4}, TC (tumour core) {1, 4}, WT (whole tumour)
{1, 2, 4}. Volume = voxel count x voxel volume (product of the spacing, mm^3) / 1000.

With a confidence (:class:`nslfcore.inference.Confidence`), three more columns hold the case's
values on every row (as a per-case column of a CSV file does): ``Agreement`` (mean Dice of the
whole-tumour masks of the mirrored passes, NaN without mirroring), ``Mean entropy`` (normalised
entropy in the predicted tumour, 0 = certain) and ``Confidence`` (``ok`` or ``low``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import vtk

TABLE_NAME = "NSLF tumor volumes"
#: Region name, description, BraTS 2021 labels.
REGIONS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("NCR", "Necrotic tumor core", (1,)),
    ("ED", "Peritumoral edema", (2,)),
    ("ET", "Enhancing tumor", (4,)),
    ("TC", "Tumor core (NCR + ET)", (1, 4)),
    ("WT", "Whole tumor (NCR + ED + ET)", (1, 2, 4)),
)
COLUMNS = ("Region", "Description", "Labels", "Voxels", "Volume [mL]")
CONFIDENCE_COLUMNS = ("Agreement", "Mean entropy", "Confidence")


def region_volumes(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> list[tuple[str, str, str, int, float]]:
    """Rows ``(region, description, labels, voxels, mL)`` for a BraTS 2021 label array (any axis order)."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    rows = []
    for name, description, values in REGIONS:
        count = int(np.isin(labels, values).sum())
        rows.append((name, description, ",".join(str(v) for v in values), count, count * voxel_ml))
    return rows


def fill_table(node: Any, labels: np.ndarray, spacing_mm: tuple[float, float, float], confidence: Any = None) -> None:
    """Replace ``node``'s table with the region volumes of ``labels`` (and the confidence columns, if given)."""
    table = vtk.vtkTable()
    arrays = [vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkIntArray(), vtk.vtkDoubleArray()]
    titles = COLUMNS
    if confidence is not None:
        arrays += [vtk.vtkDoubleArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray()]
        titles += CONFIDENCE_COLUMNS
    for array, title in zip(arrays, titles):
        array.SetName(title)
        table.AddColumn(array)
    rows = region_volumes(labels, spacing_mm)
    case_values = () if confidence is None else confidence_values(confidence)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate((*row, *case_values)):
            table.SetValue(r, c, vtk.vtkVariant(value))
    node.SetAndObserveTable(table)
    node.SetColumnUnitLabel("Volume [mL]", "mL")
    node.SetColumnDescription("Volume [mL]", "voxel count x voxel volume")
    if confidence is not None:
        node.SetColumnDescription("Agreement", f"per case: mean Dice of the whole tumour of {confidence.passes} mirrored passes")
        node.SetColumnDescription("Mean entropy", "per case: normalised entropy in the predicted tumour (0 certain, 1 no idea)")
        node.SetColumnDescription("Confidence", confidence.warning or "per case: ok")
    node.SetUseColumnTitleAsColumnHeader(True)


def confidence_values(confidence: Any) -> tuple[float, float, str]:
    """``(agreement or NaN, mean entropy, "ok" or "low")`` of a :class:`nslfcore.inference.Confidence`."""
    agreement = float("nan") if confidence.agreement is None else float(confidence.agreement)
    return agreement, float(confidence.mean_entropy), "low" if confidence.low else "ok"


def table_confidence(node: Any) -> tuple[float, float, str] | None:
    """``(agreement, mean entropy, "ok" or "low")`` read back from a table node, or ``None`` without those columns."""
    table = node.GetTable()
    if table.GetColumnByName(CONFIDENCE_COLUMNS[0]) is None or table.GetNumberOfRows() == 0:
        return None
    first = len(COLUMNS)
    return (table.GetValue(0, first).ToDouble(), table.GetValue(0, first + 1).ToDouble(),
            table.GetValue(0, first + 2).ToString())  # fmt: skip


def table_rows(node: Any) -> dict[str, tuple[int, float]]:
    """``{region: (voxels, mL)}`` read back from a table node."""
    table = node.GetTable()
    return {
        table.GetValue(r, 0).ToString(): (table.GetValue(r, 3).ToInt(), table.GetValue(r, 4).ToDouble())
        for r in range(table.GetNumberOfRows())
    }
