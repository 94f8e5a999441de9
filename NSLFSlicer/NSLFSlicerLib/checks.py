"""Input checks run before any computation; each problem is one sentence naming the node and what to do.

:func:`check_inputs` raises :class:`InputError` (a ``ValueError``) listing every problem found.
Geometries are compared as IJK-to-RAS matrices and ``(i, j, k)`` dimensions; a mismatch is an
error unless the caller resamples to the T1 grid (``resampleToReference=True``).

One of the four inputs may be left empty (issue 31: any three sequences work; the engine gives the
missing one no fusion weight). The reference grid is then the first given input in the order
T1, T1ce, T2, FLAIR (:func:`reference_modality`): T1 unless T1 is the missing one.

Raw scans (issue 32): :func:`preprocessing_reason` says in one sentence why the inputs need the
"Raw scans: register and skull-strip" option (grids differ, coarse or oblique voxels, a head), for
the panel to propose it; its head heuristic is :func:`tissue_ml`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ensure_engine_on_path
from .mrml_io import array_view, ijk_to_ras

ensure_engine_on_path()
from nslfcore import MIN_SEQUENCES, MODALITIES  # noqa: E402  (torch-free: imported before torch is installed)
from nslfcore.preprocess.detection import MAX_BRAIN_ML, MAX_OBLIQUE_DEGREES, foreground_ml  # noqa: E402  (torch-free too)
from nslfcore.preprocess.detection import MAX_SPACING_MM as ENGINE_MAX_SPACING_MM  # noqa: E402
from nslfcore.preprocess.pipeline import REFERENCE_ORDER  # noqa: E402

#: Display names of the modalities in messages.
LABELS: dict[str, str] = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
#: Tolerances of the geometry comparison: mm for positions, unitless for direction x spacing.
POSITION_TOLERANCE_MM = 1e-3
MATRIX_TOLERANCE = 1e-5


class InputError(ValueError):
    """The inputs cannot be processed; the message says which node and what to do (one line per problem)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def reference_modality(nodes: dict[str, Any]) -> str:
    """The modality whose grid the results take: the first given input in :data:`nslfcore.MODALITIES` order (T1 if given)."""
    return next((m for m in MODALITIES if nodes.get(m) is not None), MODALITIES[0])


def missing_problem(nodes: dict[str, Any]) -> str | None:
    """One sentence when fewer than three of the four inputs are given (naming the empty ones), else ``None``."""
    empty = [LABELS[m] for m in MODALITIES if nodes.get(m) is None]
    if len(MODALITIES) - len(empty) >= MIN_SEQUENCES:
        return None
    listed = empty[0] if len(empty) == 1 else ", ".join(empty[:-1]) + " and " + empty[-1]
    return (f"No {listed} volume was given; NSLF needs at least {MIN_SEQUENCES} of T1, T1ce, T2 and FLAIR, "
            "so select the missing input volumes.")  # fmt: skip


def output_problem(nodes: dict[str, Any], output_volume: Any) -> str | None:
    """One sentence when the output volume is one of the inputs (the results would overwrite it), else ``None``."""
    for modality in MODALITIES:
        node = nodes.get(modality)
        if output_volume is not None and node is not None and node.GetID() == output_volume.GetID():
            return (f"The {LABELS[modality]} input '{node.GetName()}' is also chosen as the output volume and would be "
                    "overwritten; choose another output volume or '(create new)'.")  # fmt: skip
    return None


def node_problems(modality: str, node: Any) -> list[str]:
    """Problems of one input on its own: missing, not a scalar volume, not 3-D, empty, NaN/Inf."""
    label = LABELS[modality]
    if node is None:
        return [f"No {label} volume was given; select the {label} input volume."]
    name = node.GetName()
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return [f"The {label} input '{name}' is a {node.GetClassName()}, not a scalar volume; select a grey-level MR volume."]
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        return [f"The {label} input '{name}' has no voxels; load the image again or select another volume."]
    if image.GetNumberOfScalarComponents() != 1:
        return [f"The {label} input '{name}' has {image.GetNumberOfScalarComponents()} components per voxel; select a single-component (scalar) volume."]
    dims = image.GetDimensions()
    if min(dims) < 2:
        return [f"The {label} input '{name}' is not 3-D (dimensions {dims[0]} x {dims[1]} x {dims[2]}); select a 3-D volume."]
    if node.GetParentTransformNode() is not None:
        return [f"The {label} input '{name}' is under a transform; harden the transform (Transforms module) first."]
    values = array_view(node)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        return [f"The {label} input '{name}' contains NaN or infinite voxels; replace them (e.g. with 0) before running NSLF."]
    if not values.any():
        return [f"The {label} input '{name}' is empty (all voxels are 0); select the volume that holds the {label} image."]
    return []


def geometry_problem(modality: str, node: Any, reference: Any, reference_modality: str = "t1") -> str | None:
    """A sentence if ``node``'s grid differs from the ``reference`` node's (the ``reference_modality`` input), or ``None``."""
    dims, ref_dims = node.GetImageData().GetDimensions(), reference.GetImageData().GetDimensions()
    a, b = ijk_to_ras(node), ijk_to_ras(reference)
    same = dims == ref_dims and np.allclose(a[:3, 3], b[:3, 3], atol=POSITION_TOLERANCE_MM, rtol=0)
    same = same and np.allclose(a[:3, :3], b[:3, :3], atol=MATRIX_TOLERANCE, rtol=0)
    if same:
        return None
    grid = f"{LABELS[reference_modality]} grid"
    return (
        f"The {LABELS[modality]} input '{node.GetName()}' is not on the {grid} of '{reference.GetName()}' "
        f"(dimensions {tuple(dims)} vs {tuple(ref_dims)} or different spacing/origin/orientation); "
        f"register the volumes first or pass resampleToReference=True to resample them to the {grid}."
    )


def check_inputs(nodes: dict[str, Any], resample_to_reference: bool = False) -> None:
    """Check the inputs (keys :data:`nslfcore.MODALITIES`, one may be ``None``); raise :class:`InputError` on any problem.

    Checks, in order: that at least three are given, each given node (scalar, 3-D, transform,
    NaN/Inf, empty), the same node given for two modalities, and (unless ``resample_to_reference``)
    each grid against the reference grid (:func:`reference_modality`: T1's unless T1 is missing).
    """
    problem = missing_problem(nodes)
    problems: list[str] = [] if problem is None else [problem]
    for modality in MODALITIES:
        if nodes.get(modality) is not None:
            problems += node_problems(modality, nodes[modality])
    seen: dict[str, str] = {}
    for modality in MODALITIES:
        node = nodes.get(modality)
        if node is None:
            continue
        if node.GetID() in seen:
            problems.append(
                f"The node '{node.GetName()}' is given as both {LABELS[seen[node.GetID()]]} and {LABELS[modality]}; "
                "select a different volume for each modality."
            )
        seen.setdefault(node.GetID(), modality)
    if not problems:
        problems += plausibility_problems(nodes)
    if not problems and not resample_to_reference:
        reference = reference_modality(nodes)
        for modality in MODALITIES:
            if modality != reference and nodes.get(modality) is not None:
                problem = geometry_problem(modality, nodes[modality], nodes[reference], reference)
                if problem:
                    problems.append(problem)
    if problems:
        raise InputError(problems)


def plausibility_problems(nodes: dict[str, Any]) -> list[str]:
    """A label map selected as an MR modality, or two nodes holding the same voxels (the engine's rules, naming nodes)."""
    from nslfcore.data.validation import looks_like_labels

    given = [m for m in MODALITIES if nodes.get(m) is not None]
    arrays = {m: array_view(nodes[m]) for m in given}
    problems = [f"The {LABELS[m]} input '{nodes[m].GetName()}' looks like a label map (only the values "
                f"{sorted(np.unique(arrays[m]).tolist())}), not an MR volume; select the {LABELS[m]} image."
                for m in given if looks_like_labels(arrays[m])]  # fmt: skip
    for i, a in enumerate(given):
        for b in given[i + 1 :]:
            if arrays[a].shape == arrays[b].shape and np.array_equal(arrays[a], arrays[b]):
                problems.append(f"The {LABELS[a]} input '{nodes[a].GetName()}' and the {LABELS[b]} input "
                                f"'{nodes[b].GetName()}' hold the same image; select four different modalities.")  # fmt: skip
    return problems


# ------------------------------------------------------------------------------- raw scans (issue 32)
# The thresholds and the reference order are the engine's (torch-free modules): the panel proposes the
# option exactly when ``nslf run`` would advise --preprocess.
PREPROCESS_REFERENCE_ORDER = REFERENCE_ORDER
MAX_SPACING_MM = ENGINE_MAX_SPACING_MM
OBLIQUE_DEGREES = MAX_OBLIQUE_DEGREES
HEAD_TISSUE_ML = MAX_BRAIN_ML


def preprocess_reference(nodes: dict[str, Any]) -> str:
    """The modality whose grid a preprocessed run's results take: the first given in :data:`PREPROCESS_REFERENCE_ORDER`."""
    return next((m for m in PREPROCESS_REFERENCE_ORDER if nodes.get(m) is not None), PREPROCESS_REFERENCE_ORDER[0])


def oblique_degrees(node: Any) -> float:
    """The largest angle (degrees) between one of the node's grid axes and the nearest LPS (or RAS) axis."""
    axes = ijk_to_ras(node)[:3, :3]
    axes = axes / np.linalg.norm(axes, axis=0, keepdims=True)
    return float(np.degrees(np.arccos(np.clip(np.abs(axes).max(axis=0), -1.0, 1.0))).max())


def tissue_ml(node: Any) -> float:
    """The volume (ml) of the node's tissue: :func:`nslfcore.preprocess.detection.foreground_ml` of its voxels."""
    return foreground_ml(array_view(node), node.GetSpacing())


def _usable(node: Any) -> bool:
    image = None if node is None else node.GetImageData()
    return (image is not None and node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
            and image.GetNumberOfScalarComponents() == 1 and min(image.GetDimensions()) >= 2)  # fmt: skip


def preprocessing_reason(nodes: dict[str, Any]) -> str | None:
    """One sentence saying why the inputs need "Raw scans: register and skull-strip", or ``None``.

    In this order (the first found is said): the grids differ (as :func:`geometry_problem` compares
    them, against the :func:`preprocess_reference` input); a voxel coarser than
    :data:`MAX_SPACING_MM` along any axis; a grid more than :data:`OBLIQUE_DEGREES` from the
    axes; a head in the reference volume (:func:`tissue_ml` above :data:`HEAD_TISSUE_ML`). Inputs
    that are not 3-D scalar volumes are ignored (:func:`check_inputs` names them at run time).
    """
    given = {m: nodes[m] for m in MODALITIES if _usable(nodes.get(m))}
    if not given:
        return None
    reference = preprocess_reference(given)
    ref = given[reference]
    for modality, node in given.items():
        if modality != reference and geometry_problem(modality, node, ref, reference):
            return (f"{LABELS[modality]} '{node.GetName()}' is not on the grid of {LABELS[reference]} '{ref.GetName()}', "
                    "so the sequences need co-registering: Raw scans is on.")  # fmt: skip
    for modality, node in given.items():
        spacing = max(node.GetSpacing())
        if spacing > MAX_SPACING_MM:
            return (f"{LABELS[modality]} '{node.GetName()}' has {spacing:.1f} mm voxels (NSLF was trained on 1 mm), "
                    "so it needs resampling: Raw scans is on.")  # fmt: skip
    for modality, node in given.items():
        degrees = oblique_degrees(node)
        if degrees > OBLIQUE_DEGREES:
            return (f"{LABELS[modality]} '{node.GetName()}' is oblique ({degrees:.0f} degrees from the axes), "
                    "so it needs reorienting: Raw scans is on.")  # fmt: skip
    tissue = tissue_ml(ref)
    if tissue > HEAD_TISSUE_ML:
        return (f"{LABELS[reference]} '{ref.GetName()}' looks like a whole head ({tissue / 1000:.1f} l of tissue, more than "
                "a brain), so it needs skull-stripping: Raw scans is on.")  # fmt: skip
    return None
