"""Figures of ``nslf compare`` (:mod:`nslfcore.compare`): fused slices side by side, segmentations
side by side, per-case Dice box plots.

Needs matplotlib (``nslfcore[tables]``; also installed with VTK). An axial slice of a ``(z, y, x)``
array is drawn with row ``y = 0`` at the top and ``x`` to the right: on an identity-direction LPS
grid (BraTS, the phantoms) anterior is at the top and the patient's left on the right, the
radiological convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.brats import load_case
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.labels import ED, ET, NCR, to_internal
from nslfcore.data.transforms import preprocess_case
from nslfcore.evaluation import REGION_NAMES, infer_case, inference_mode
from nslfcore.inference import InferenceResult

if TYPE_CHECKING:
    from nslfcore.compare import Method

#: Display colours (RGB, 0-255) of the internal classes, those of the module's terminology
#: (``NSLFSlicer/Resources/Terminology/NSLFSlicer-BrainTumor.term.json``), so a figure reads like Slicer.
CLASS_COLOURS: dict[int, tuple[int, int, int]] = {NCR: (214, 39, 40), ED: (44, 160, 44), ET: (255, 200, 20)}
#: Legend names of :data:`CLASS_COLOURS`.
CLASS_LEGEND: dict[int, str] = {NCR: "necrotic core", ED: "oedema", ET: "enhancing"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("nslf compare draws its figures with matplotlib: pip install 'nslfcore[tables]' "
                          "(or run with --no-figures).") from error  # fmt: skip
    return plt


def _save(plt: Any, figure: Any, path: Path) -> Path:
    """Write ``figure`` to ``path`` (PNG, 110 dpi; parent folders made), close it and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _normalised_sources(files: CaseFiles, require_label: bool = False) -> tuple[Case, np.ndarray]:
    """Case ``files`` loaded, and its four sources as the network sees them (normalised to [0, 1] by
    :func:`~nslfcore.data.transforms.preprocess_case`) put back on the case grid: ``(4, z, y, x)`` in
    :data:`nslfcore.MODALITIES` order, 0 outside the brain box."""
    case = load_case(files, require_label=require_label)
    prepared = preprocess_case(case)
    return case, prepared.record.uncrop(prepared.image)


def tumour_slice(label: np.ndarray | None, brain: np.ndarray) -> int:
    """The axial index ``z`` with the most tumour (the most brain without a label)."""
    counts = (label > 0).sum(axis=(1, 2)) if label is not None and (label > 0).any() else brain.sum(axis=(1, 2))
    return int(np.argmax(counts))


def _outputs(files: CaseFiles, method: Method, device: str, window: Sequence[int] | None,
             known: Mapping[str, InferenceResult] | None) -> InferenceResult:  # fmt: skip
    """``method``'s outputs on case ``files``: ``known[method.name]`` when there, else inferred as
    :func:`nslfcore.evaluation.infer_case` does (labels in the BraTS 2021 convention)."""
    if known is not None and method.name in known:
        return known[method.name]
    return infer_case(files, method.network, device, window)[1]


def fused_slices_figure(files: CaseFiles, methods: Sequence[Method], path: Path, device: str = "auto",
                        window: Sequence[int] | None = None,
                        known: Mapping[str, InferenceResult] | None = None) -> Path:  # fmt: skip
    """One axial slice of case ``files``: its four normalised sources, then the fused volume of each method.

    The slice is the one with the most tumour; every panel has the same [0, 1] grey scale. ``window``:
    infer with a sliding window of that size (:func:`nslfcore.evaluation.inference_mode`). ``known``:
    outputs on this case already computed, by method name (the others are inferred).
    """
    plt = _pyplot()
    inference_mode(window)  # a bad window fails before any work
    case, sources = _normalised_sources(files)
    z = tumour_slice(case.label, sources.max(axis=0) > 0)
    panels = [(name, sources[i, z]) for i, name in enumerate(MODALITIES)]
    for method in methods:
        fused = _outputs(files, method, device, window, known).fused
        assert fused is not None
        panels.append((method.name, fused[z]))
    columns = min(len(panels), 5)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.0 * rows + 0.4), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (title, image) in zip(axes.ravel(), panels):
        axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, origin="upper")
        axis.set_title(title, fontsize=9)
    figure.suptitle(f"{case.name}, axial slice z = {z}: sources (first four) and fused volumes", fontsize=10)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 0.95), h_pad=1.5)
    return _save(plt, figure, path)


def healthy_slice(label: np.ndarray | None, brain: np.ndarray) -> int | None:
    """The axial index ``z`` with the most brain and no reference tumour (``None`` if every brain slice has some)."""
    area = brain.sum(axis=(1, 2)).astype(np.int64)
    if label is not None:
        area[(label > 0).any(axis=(1, 2))] = 0
    return int(np.argmax(area)) if area.max() > 0 else None


def label_overlay(background: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """An RGB image ``(y, x, 3)`` in [0, 1]: the grey ``background`` slice ([0, 1]) with the internal
    classes of ``labels`` (same ``(y, x)`` slice) blended in :data:`CLASS_COLOURS` at ``alpha``."""
    rgb = np.repeat(np.clip(background, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)
    for index, colour in CLASS_COLOURS.items():
        where = labels == index
        rgb[where] = (1.0 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32) / 255.0
    return rgb


def segmentation_slices_figure(files: CaseFiles, methods: Sequence[Method], path: Path, device: str = "auto",
                               rows: dict[str, list[dict[str, float | str]]] | None = None,
                               window: Sequence[int] | None = None,
                               known: Mapping[str, InferenceResult] | None = None) -> Path:  # fmt: skip
    """Case ``files`` segmented by each method beside the reference, on its normalised FLAIR.

    Top row: the axial slice with the most reference tumour; bottom row (when the case has one):
    the slice with the most brain and no reference tumour, where a method that over-calls shows
    its false positives. Classes in :data:`CLASS_COLOURS`. ``rows`` (``nslf compare``'s per-case
    rows by method name) adds each method's WT / TC / ET Dice on this case to its title; ``window``
    and ``known`` as in :func:`fused_slices_figure`.
    """
    plt = _pyplot()
    inference_mode(window)
    case, sources = _normalised_sources(files, require_label=True)
    assert case.label is not None
    flair, brain = sources[MODALITIES.index("flair")], sources.max(axis=0) > 0
    slices = [z for z in (tumour_slice(case.label, brain), healthy_slice(case.label, brain)) if z is not None]
    panels: list[tuple[str, np.ndarray]] = [("reference", case.label)]
    for method in methods:
        labels = _outputs(files, method, device, window, known).labels
        assert labels is not None
        predicted = to_internal(labels, "brats2021")
        scores = {str(r["case"]): r for r in (rows or {}).get(method.name, [])}.get(case.name)
        title = method.name if scores is None else (
            f"{method.name}\nDice WT {float(scores['WT_dice']):.2f} TC {float(scores['TC_dice']):.2f} "
            f"ET {float(scores['ET_dice']):.2f}")  # fmt: skip
        panels.append((title, predicted))
    figure, axes = plt.subplots(len(slices), len(panels), figsize=(2.4 * len(panels), 2.5 * len(slices) + 0.9),
                                squeeze=False)  # fmt: skip
    for row, z in enumerate(slices):
        for column, (title, labels) in enumerate(panels):
            axis = axes[row][column]
            axis.imshow(label_overlay(flair[z], labels[z]), origin="upper")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
            if column == 0:
                axis.set_ylabel(f"z = {z}" + (" (most tumour)" if row == 0 else " (no tumour)"), fontsize=8)
    from matplotlib.patches import Patch

    handles = [Patch(color=(r / 255, g / 255, b / 255), label=CLASS_LEGEND[i]) for i, (r, g, b) in CLASS_COLOURS.items()]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    figure.suptitle(f"{case.name}: reference and predicted labels on FLAIR", fontsize=10)
    figure.tight_layout(rect=(0.0, 0.06, 1.0, 0.95))
    return _save(plt, figure, path)


def dice_boxplot(results: dict[str, list[dict[str, float | str]]], path: Path) -> Path:
    """Box plots of per-case Dice, one panel per region (ET, TC, WT), one box per segmenting method."""
    plt = _pyplot()
    names = list(results)
    figure, axes = plt.subplots(1, len(REGION_NAMES), figsize=(3.2 * len(REGION_NAMES) + 0.4 * len(names), 3.6),
                                sharey=True, squeeze=False)  # fmt: skip
    for axis, region in zip(axes[0], REGION_NAMES):
        values = [[float(r[f"{region}_dice"]) for r in results[name]] for name in names]
        axis.boxplot(values, showmeans=True)
        axis.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(f"{region} (n = {len(values[0])})", fontsize=10)
        axis.set_ylim(0.0, 1.02)
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("Dice per case")
    figure.tight_layout()
    return _save(plt, figure, path)
