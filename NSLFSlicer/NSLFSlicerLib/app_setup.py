"""The MRML scene and the Slicer module logics NSLFSlicer uses, inside or outside Slicer.

Inside the Slicer application the logics come from ``slicer.app`` and ``slicer.modules``. With
``slicer-core`` alone (plain Python, CI, batch scripts) :func:`create_standalone_context` builds
what the application would: a :class:`vtkSlicerApplicationLogic` on a scene, the Colors,
Volumes, Segmentations, Subject Hierarchy and Volume Rendering module logics registered with
both, and the segmentation converter rules (labelmap <-> closed surface) registered with
:class:`vtkSegmentationConverterFactory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import slicer

#: Converter rules the segmentation node needs to make closed surfaces from labelmaps and back.
CONVERTER_RULES: tuple[str, ...] = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
    "vtkFractionalLabelmapToClosedSurfaceConversionRule",
)


@dataclass
class SlicerContext:
    """A scene and the module logics working on it.

    Attributes:
        scene: the ``vtkMRMLScene``.
        app_logic: the application logic (``vtkSlicerApplicationLogic``).
        volumes: ``vtkSlicerVolumesLogic``.
        segmentations: ``vtkSlicerSegmentationsModuleLogic``.
        volume_rendering: ``vtkSlicerVolumeRenderingLogic``.
        standalone: ``True`` when built here rather than taken from a running Slicer.
    """

    scene: Any
    app_logic: Any
    volumes: Any
    segmentations: Any
    volume_rendering: Any
    standalone: bool


def in_slicer_application() -> bool:
    """``True`` inside the Slicer application (``slicer.app`` exists), ``False`` with slicer-core alone."""
    return getattr(slicer, "app", None) is not None and hasattr(slicer, "modules")


def register_converter_rules() -> None:
    """Register the segmentation converter rules with the factory unless already there (idempotent)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for name in CONVERTER_RULES:
        if name not in present:
            factory.RegisterConverterRule(getattr(slicer, name)())


def create_standalone_context(scene: Any = None) -> SlicerContext:
    """Build an application logic and the module logics on ``scene`` (a new scene if ``None``)."""
    scene = scene if scene is not None else slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    for module, cls in (
        ("Colors", slicer.vtkMRMLColorLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("VolumeRendering", slicer.vtkSlicerVolumeRenderingLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module, logic)
        logics[module] = logic
    app_logic.SetColorLogic(logics["Colors"])
    register_converter_rules()
    return SlicerContext(
        scene=scene,
        app_logic=app_logic,
        volumes=logics["Volumes"],
        segmentations=logics["Segmentations"],
        volume_rendering=logics["VolumeRendering"],
        standalone=True,
    )


def application_context() -> SlicerContext:
    """The running Slicer application's scene and module logics."""
    return SlicerContext(
        scene=slicer.mrmlScene,
        app_logic=slicer.app.applicationLogic(),
        volumes=slicer.modules.volumes.logic(),
        segmentations=slicer.modules.segmentations.logic(),
        volume_rendering=slicer.modules.volumerendering.logic(),
        standalone=False,
    )


def default_context(scene: Any = None) -> SlicerContext:
    """The application's context inside Slicer (when ``scene`` is ``None`` or its scene), else a standalone one."""
    if in_slicer_application() and (scene is None or scene is slicer.mrmlScene):
        return application_context()
    return create_standalone_context(scene)
