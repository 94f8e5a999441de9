"""Direct volume rendering of the fused volume, with NSLFSlicer's own transfer functions.

The fused volume is a voxel-wise convex combination of the four normalised sources, so its
values lie in [0, 1] with the background at (or near) 0. The transfer functions are placed on
the brain's intensity percentiles (brain = voxels above :data:`BACKGROUND`): background fully
transparent, brain a faint warm-grey haze, bright tissue more opaque, so tumour surfaces inside
stay visible. Slicer's ``presets.xml`` is not needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import vtk

#: Values at or below this are background (normalised intensities).
BACKGROUND = 0.02


def brain_percentiles(array: np.ndarray, q: tuple[float, ...] = (1.0, 50.0, 99.0)) -> tuple[float, ...]:
    """Percentiles of the brain voxels (> :data:`BACKGROUND`) of a ``(z, y, x)`` array; ``(0, 0.5, 1)``-like if none."""
    brain = array[array > BACKGROUND]
    if brain.size == 0:
        return tuple(float(v) / 100.0 for v in q)
    return tuple(float(v) for v in np.percentile(brain, q))


def fill_volume_property(prop: Any, array: np.ndarray) -> None:
    """Set colour and opacity transfer functions of a ``vtkVolumeProperty`` for a fused ``(z, y, x)`` array."""
    low, mid, high = brain_percentiles(array)
    span = max(high - low, 1e-6)
    opacity = vtk.vtkPiecewiseFunction()
    opacity.AddPoint(min(BACKGROUND, low * 0.5), 0.0)
    opacity.AddPoint(low, 0.0)
    opacity.AddPoint(low + 0.15 * span, 0.008)
    opacity.AddPoint(mid, 0.02)
    opacity.AddPoint(high, 0.12)
    opacity.AddPoint(max(high, 1.0) + 1e-3, 0.2)
    colour = vtk.vtkColorTransferFunction()
    colour.AddRGBPoint(low, 0.30, 0.20, 0.15)
    colour.AddRGBPoint(mid, 0.80, 0.66, 0.55)
    colour.AddRGBPoint(high, 1.00, 0.95, 0.90)
    prop.SetScalarOpacity(opacity)
    prop.SetColor(colour)
    prop.SetInterpolationTypeToLinear()
    prop.ShadeOn()
    prop.SetAmbient(0.3)
    prop.SetDiffuse(0.6)
    prop.SetSpecular(0.2)


def set_window_level(volume_node: Any, array: np.ndarray) -> None:
    """Window/level of the 2-D display on the brain's 1st-99th percentile range."""
    low, _, high = brain_percentiles(array)
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(max(high - low, 1e-6), 0.5 * (low + high))


def setup_volume_rendering(volume_rendering_logic: Any, volume_node: Any, array: np.ndarray) -> Any:
    """Create (or reuse) the volume's VR display node with our transfer functions, visible; returns it."""
    display = volume_rendering_logic.GetFirstVolumeRenderingDisplayNode(volume_node)
    if display is None:
        display = volume_rendering_logic.CreateDefaultVolumeRenderingNodes(volume_node)
    fill_volume_property(display.GetVolumePropertyNode().GetVolumeProperty(), array)
    display.SetVisibility(True)
    return display
