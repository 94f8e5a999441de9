"""The three tumour segments' names, BraTS 2021 labels, colours and terminology tags.

Read from ``Resources/Terminology/NSLFSlicer-BrainTumor.term.json`` (Slicer's segmentation
category/type context format, so Slicer's Terminologies module can load it too). The tag string
is Slicer's serialised terminology entry, ``~``-separated::

    context~category~type~typeModifier~regionContext~region~regionModifier

each code as ``CodingSchemeDesignator^CodeValue^CodeMeaning`` (the format of
``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import RESOURCES_DIR

TERMINOLOGY_FILE: Path = RESOURCES_DIR / "Terminology" / "NSLFSlicer-BrainTumor.term.json"


@dataclass(frozen=True)
class SegmentSpec:
    """One output segment.

    Attributes:
        segment_id: stable segment ID in the segmentation node (``"NCR"``, ``"ED"``, ``"ET"``).
        name: display name.
        label: BraTS 2021 label value (1, 2 or 4).
        color: RGB in [0, 1].
        terminology: Slicer terminology entry tag string.
    """

    segment_id: str
    name: str
    label: int
    color: tuple[float, float, float]
    terminology: str


def _code(entry: dict) -> str:
    return f"{entry['CodingSchemeDesignator']}^{entry['CodeValue']}^{entry['CodeMeaning']}"


@lru_cache(maxsize=1)
def segment_specs() -> tuple[SegmentSpec, ...]:
    """The segments in BraTS label order: necrotic core (1), edema (2), enhancing tumour (4)."""
    data = json.loads(TERMINOLOGY_FILE.read_text(encoding="utf-8"))
    context = data["SegmentationCategoryTypeContextName"]
    region = data["AnatomicRegion"]
    category = data["SegmentationCodes"]["Category"][0]
    ids = {1: "NCR", 2: "ED", 4: "ET"}
    specs = []
    for t in category["Type"]:
        tag = "~".join(
            [context, _code(category), _code(t), "^^", region["RegionContextName"], _code(region), "^^"]
        )
        rgb = tuple(v / 255.0 for v in t["recommendedDisplayRGBValue"])
        specs.append(SegmentSpec(ids[t["BraTSLabel"]], t["3dSlicerLabel"], int(t["BraTSLabel"]), rgb, tag))  # type: ignore[arg-type]
    return tuple(sorted(specs, key=lambda s: s.label))


#: The brain mask of a preprocessed run (issue 32): SNOMED CT "Brain" in the "Anatomical Structure"
#: category of Slicer's General Anatomy terminology, in the colour Slicer's anatomy colour table gives brain.
BRAIN = SegmentSpec(
    segment_id="Brain",
    name="Brain",
    label=1,
    color=(250 / 255, 250 / 255, 225 / 255),
    terminology="Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
    "~SCT^12738006^Brain~^^~Anatomic codes - DICOM master list~^^~^^",
)


def register_terminology(terminologies_logic: Any) -> str:
    """Load :data:`TERMINOLOGY_FILE` into Slicer's Terminologies logic, once; returns its context name.

    Without it the segments' tags name a context Slicer does not know, and its terminology selector
    (double-click a segment) cannot show them. ``terminologies_logic``: a ``vtkSlicerTerminologiesModuleLogic``
    (``slicer.modules.terminologies.logic()`` in Slicer).
    """
    import vtk

    name = json.loads(TERMINOLOGY_FILE.read_text(encoding="utf-8"))["SegmentationCategoryTypeContextName"]
    loaded = vtk.vtkStringArray()
    terminologies_logic.GetLoadedTerminologyNames(loaded)
    if name not in {loaded.GetValue(i) for i in range(loaded.GetNumberOfValues())}:
        terminologies_logic.LoadTerminologyFromFile(str(TERMINOLOGY_FILE))
    return name
