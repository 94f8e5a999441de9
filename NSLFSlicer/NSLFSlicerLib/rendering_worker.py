"""Offscreen 3-D rendering worker: run as a separate process (VTK crashes instead of raising without GL).

``python rendering_worker.py JOB.json`` where the job JSON holds::

    {"volume": "fused.vti", "ijk_to_ras": [[4x4]], "opacity": [[x, a], ...], "colour": [[x, r, g, b], ...],
     "surfaces": [{"path": "NCR.vtp", "color": [r, g, b], "opacity": 1.0, "name": "Necrotic tumor core"}, ...],
     "png": "render.png", "size": [w, h], "volume_opacity_scale": 0.12, "title": "case NSLF fused"}

The picture: the fused volume as translucent "glass" (opacity scaled by ``volume_opacity_scale``),
the tumour surfaces inside, seen from the left, front and above; a legend with each surface's
colour, and the title.

The volume is the ``(i, j, k)`` image (origin 0, spacing 1) placed in RAS by ``ijk_to_ras``;
surfaces are poly data in RAS mm. Plain VTK only (no Slicer import), so any VTK Python works.
Exit code 0 and the PNG written, or non-zero with the reason on stderr.
"""

from __future__ import annotations

import json
import sys

import vtk


def _volume(job: dict) -> vtk.vtkVolume:
    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(job["volume"])
    reader.Update()
    mapper = vtk.vtkSmartVolumeMapper()
    mapper.SetInputConnection(reader.GetOutputPort())
    mapper.SetSampleDistance(0.5)
    prop = vtk.vtkVolumeProperty()
    opacity = vtk.vtkPiecewiseFunction()
    scale = float(job.get("volume_opacity_scale", 1.0))
    for x, a in job["opacity"]:
        opacity.AddPoint(x, a * scale)
    colour = vtk.vtkColorTransferFunction()
    for x, r, g, b in job["colour"]:
        colour.AddRGBPoint(x, r, g, b)
    prop.SetScalarOpacity(opacity)
    prop.SetColor(colour)
    prop.SetInterpolationTypeToLinear()
    prop.ShadeOn()
    prop.SetAmbient(0.35)
    prop.SetDiffuse(0.6)
    prop.SetSpecular(0.15)
    volume = vtk.vtkVolume()
    volume.SetMapper(mapper)
    volume.SetProperty(prop)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, job["ijk_to_ras"][r][c])
    volume.SetUserMatrix(matrix)
    return volume


def _surface(spec: dict) -> vtk.vtkActor:
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(spec["path"])
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(reader.GetOutputPort())
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*spec["color"])
    actor.GetProperty().SetOpacity(spec.get("opacity", 1.0))
    actor.GetProperty().SetSpecular(0.3)
    return actor


def _legend(job: dict, renderer: vtk.vtkRenderer) -> None:
    """The title at the top left, one coloured line per surface at the bottom left."""
    lines = [(job.get("title", ""), (1.0, 1.0, 1.0), 0.95)]
    lines += [(s["name"], s["color"], 0.04 + 0.045 * i) for i, s in enumerate(reversed(job["surfaces"])) if "name" in s]
    for text, colour, y in lines:
        actor = vtk.vtkTextActor()
        actor.SetInput(text)
        actor.GetTextProperty().SetFontSize(20)
        actor.GetTextProperty().SetColor(*colour)
        actor.GetTextProperty().SetVerticalJustificationToCentered()
        actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
        actor.SetPosition(0.03, y)
        renderer.AddActor2D(actor)


def render(job: dict) -> None:
    """Render the job's volume and surfaces to its PNG (anterior-left-superior view, black background)."""
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.0, 0.0, 0.0)
    renderer.SetBackground2(0.12, 0.14, 0.22)
    renderer.GradientBackgroundOn()
    for spec in job["surfaces"]:
        renderer.AddActor(_surface(spec))
    renderer.AddVolume(_volume(job))
    _legend(job, renderer)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*job.get("size", [800, 800]))
    window.AddRenderer(renderer)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    focal = camera.GetFocalPoint()
    distance = camera.GetDistance()
    direction = (-0.8, 0.45, 0.4)  # RAS: from the left, a little anterior and above
    norm = sum(v * v for v in direction) ** 0.5
    camera.SetPosition(*(f + distance * v / norm for f, v in zip(focal, direction)))
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.5)
    renderer.ResetCameraClippingRange()
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(job["png"])
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        render(json.load(handle))
