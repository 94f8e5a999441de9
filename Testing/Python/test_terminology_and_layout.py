"""The segments' terminology is known to Slicer's Terminologies logic; Show 3D keeps a layout that has a 3-D view (issue 33)."""

from __future__ import annotations

from pathlib import Path

import slicer
from NSLFSlicerLib.terminology import register_terminology, segment_specs

ROOT = Path(__file__).resolve().parents[2]


def loaded_names(logic) -> list[str]:
    import vtk

    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    return [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def test_the_segments_terminology_is_registered_once_and_their_tags_resolve():
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    tag = segment_specs()[2].terminology  # enhancing tumour
    assert "NSLF brain tumor" not in loaded_names(logic)  # the selector would not know the segments' context
    assert register_terminology(logic) == "NSLF brain tumor" and loaded_names(logic).count("NSLF brain tumor") == 1
    assert register_terminology(logic) == "NSLF brain tumor" and loaded_names(logic).count("NSLF brain tumor") == 1
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(tag, entry)
    assert entry.GetTerminologyContextName() == "NSLF brain tumor"
    assert entry.GetTypeObject().GetCodeValue() == "108369006"  # SCT Neoplasm
    assert logic.GetNumberOfCategoriesInTerminology("NSLF brain tumor") >= 1  # what the selector lists


def test_the_slicer_logic_registers_it_and_show_3d_keeps_a_layout_with_a_3d_view():
    source = (ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text()
    assert "register_terminology(slicer.modules.terminologies.logic())" in source
    assert "if manager.threeDViewCount == 0:" in source
