"""The tumour volumes table: per region voxel count and volume in mL.

Regions (BraTS 2021 labels): NCR {1}, ED {2}, ET {4}, TC (tumour core) {1, 4}, WT (whole tumour)
{1, 2, 4}. Volume = voxel count x voxel volume (product of the spacing, mm^3) / 1000.
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


def region_volumes(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> list[tuple[str, str, str, int, float]]:
    """Rows ``(region, description, labels, voxels, mL)`` for a BraTS 2021 label array (any axis order)."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    rows = []
    for name, description, values in REGIONS:
        count = int(np.isin(labels, values).sum())
        rows.append((name, description, ",".join(str(v) for v in values), count, count * voxel_ml))
    return rows


def fill_table(node: Any, labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> None:
    """Replace ``node``'s table with the region volumes of ``labels``."""
    table = vtk.vtkTable()
    arrays = [vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkIntArray(), vtk.vtkDoubleArray()]
    for array, title in zip(arrays, COLUMNS):
        array.SetName(title)
        table.AddColumn(array)
    rows = region_volumes(labels, spacing_mm)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.SetValue(r, c, vtk.vtkVariant(value))
    node.SetAndObserveTable(table)
    node.SetColumnUnitLabel("Volume [mL]", "mL")
    node.SetColumnDescription("Volume [mL]", "voxel count x voxel volume")
    node.SetUseColumnTitleAsColumnHeader(True)


def table_rows(node: Any) -> dict[str, tuple[int, float]]:
    """``{region: (voxels, mL)}`` read back from a table node."""
    table = node.GetTable()
    return {
        table.GetValue(r, 0).ToString(): (table.GetValue(r, 3).ToInt(), table.GetValue(r, 4).ToDouble())
        for r in range(table.GetNumberOfRows())
    }
