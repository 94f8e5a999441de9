"""A 3-D screenshot of the fused volume (volume rendering) with the tumour's closed surfaces, offscreen.

The rendering runs in a child process (:mod:`.rendering_worker`, plain VTK) because VTK crashes
instead of raising when no OpenGL works. The OpenGL back-ends are tried in order (:data:`BACKENDS`:
EGL, then OSMesa, then VTK's default) until one writes a non-blank PNG.
Inputs are MRML nodes: their data are handed over as files (``.vti`` image in IJK with its
IJK-to-RAS matrix, ``.vtp`` surfaces in RAS).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import vtk

from .mrml_io import ijk_to_ras
from .process_runner import child_environment, child_process_options, python_executable
from .terminology import segment_specs

WORKER = Path(__file__).with_name("rendering_worker.py")
#: The picture shows the brain as translucent "glass" so the tumour surfaces inside stay visible:
#: the fused volume's opacity transfer function is scaled by this factor in the picture only.
VOLUME_OPACITY_SCALE = 0.12
#: ``VTK_DEFAULT_OPENGL_WINDOW`` values tried in turn (``None``: VTK's default).
BACKENDS: tuple[str | None, ...] = ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow", None)


def _transfer_functions(volume_node: Any) -> tuple[list, list]:
    display = None
    for i in range(volume_node.GetNumberOfDisplayNodes()):
        d = volume_node.GetNthDisplayNode(i)
        if d is not None and d.IsA("vtkMRMLVolumeRenderingDisplayNode"):
            display = d
    if display is None:
        raise ValueError(f"Volume '{volume_node.GetName()}' has no volume rendering; run NSLF fusion on it first.")
    prop = display.GetVolumePropertyNode().GetVolumeProperty()
    opacity, colour = prop.GetScalarOpacity(), prop.GetRGBTransferFunction()
    node = [0.0] * 4
    o = []
    for i in range(opacity.GetSize()):
        opacity.GetNodeValue(i, node)
        o.append([node[0], node[1]])
    c = []
    node6 = [0.0] * 6
    for i in range(colour.GetSize()):
        colour.GetNodeValue(i, node6)
        c.append(node6[:4])
    return o, c


def write_job(volume_node: Any, segmentation_node: Any, png: Path, folder: Path, size: tuple[int, int]) -> Path:
    """Write the worker's input files and job JSON into ``folder``; returns the JSON path."""
    writer = vtk.vtkXMLImageDataWriter()
    writer.SetFileName(str(folder / "volume.vti"))
    writer.SetInputData(volume_node.GetImageData())
    writer.Write()
    opacity, colour = _transfer_functions(volume_node)
    surfaces = []
    if segmentation_node is not None:
        segmentation_node.CreateClosedSurfaceRepresentation()
        for spec in segment_specs():
            poly = vtk.vtkPolyData()
            segmentation_node.GetClosedSurfaceRepresentation(spec.segment_id, poly)
            if poly.GetNumberOfPoints() == 0:
                continue
            path = folder / f"{spec.segment_id}.vtp"
            w = vtk.vtkXMLPolyDataWriter()
            w.SetFileName(str(path))
            w.SetInputData(poly)
            w.Write()
            surfaces.append({"path": str(path), "color": list(spec.color), "opacity": 0.45 if spec.label == 2 else 1.0,
                             "name": spec.name})  # fmt: skip
    job = {
        "volume": str(folder / "volume.vti"), "ijk_to_ras": ijk_to_ras(volume_node).tolist(), "opacity": opacity,
        "colour": colour, "surfaces": surfaces, "png": str(png), "size": list(size),
        "volume_opacity_scale": VOLUME_OPACITY_SCALE, "title": volume_node.GetName(),
    }  # fmt: skip
    path = folder / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def is_blank(png: Path) -> bool:
    """``True`` if the PNG is missing or has a single colour."""
    if not png.is_file():
        return True
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(png))
    reader.Update()
    scalars = reader.GetOutput().GetPointData().GetScalars()
    if scalars is None:
        return True
    return all(scalars.GetRange(c)[0] == scalars.GetRange(c)[1] for c in range(scalars.GetNumberOfComponents()))


def render_png(volume_node: Any, segmentation_node: Any, png: str | Path, size: tuple[int, int] = (800, 800), timeout: float = 120) -> str:
    """Render to ``png``; returns the back-end used. Raises ``RuntimeError`` with every back-end's failure."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    with tempfile.TemporaryDirectory(prefix="nslf-render-") as tmp:
        job = write_job(volume_node, segmentation_node, png, Path(tmp), size)
        for backend in BACKENDS:
            env = child_environment()
            env.pop("VTK_DEFAULT_OPENGL_WINDOW", None)
            if backend:
                env["VTK_DEFAULT_OPENGL_WINDOW"] = backend
            png.unlink(missing_ok=True)
            try:
                proc = subprocess.run([python_executable(), str(WORKER), str(job)], env=env, capture_output=True, text=True,
                                      timeout=timeout, **child_process_options())
            except subprocess.TimeoutExpired:
                failures.append(f"{backend or 'default'}: timed out")
                continue
            if proc.returncode == 0 and not is_blank(png):
                return backend or "default"
            failures.append(f"{backend or 'default'}: exit {proc.returncode} {proc.stderr.strip()[-300:]}")
    raise RuntimeError("No OpenGL back-end could render offscreen: " + " | ".join(failures))
