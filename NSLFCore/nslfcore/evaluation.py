"""Evaluate a model on labelled cases: per-case metrics and the paper's summary table.

For each case: :func:`nslfcore.inference.run` (fused volume + labels on the input grid), then the
fusion metrics of the fused volume against the four normalised sources inside the brain's box
(:func:`nslfcore.metrics.fusion_metrics`) and the segmentation metrics per region ET/TC/WT on the
whole grid, with the brain-mask variants (:func:`nslfcore.metrics.segmentation_metrics`).

A labelled case also gets the lesion conspicuity of the fused volume (:data:`CONSPICUITY_COLUMNS`,
:mod:`nslfcore.metrics.conspicuity`): the contrast-to-noise ratio of the whole tumour against
normal-appearing white matter (estimated from T1 by :func:`~nslfcore.metrics.normal_white_matter`)
in the fused volume over that of the best source, on the same normalised brain box.

HD95 is either ``"max"`` (MONAI's, column ``<region>_hd95``, the default) or ``"pooled"`` (medpy's,
the authors' scripts, column ``<region>_hd95_pooled``); the column name and the summary say which.
A fusion-only network (a classical baseline of :mod:`nslfcore.fusion_baselines`) gets fusion
columns only.

With ``slices_2d`` (``nslf evaluate --metrics-2d N``) the rows also get the paper's 2-D fusion
metrics (:data:`FUSION_2D_COLUMNS`: FSIM, VIFP, NMI, IFC of :mod:`nslfcore.metrics.fusion_2d`) on
up to ``N`` axial slices of the case grid chosen by
:func:`~nslfcore.metrics.fusion_2d.select_axial_slices` from the brain mask.

Inference is :func:`nslfcore.inference.run`'s automatic choice (the whole brain box at once where
it fits), or, with a ``window`` ``(z, y, x)`` in voxels, a sliding window of that size (overlap
0.5, Gaussian blending) for every model. The two can differ (a window sees less context;
overlapping windows are averaged), most for networks whose normalisation depends on the input's
extent (group or instance norm, e.g. SegResNet): trained on small crops, such a network sees
other statistics on the whole brain box.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.brats import load_case
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.labels import to_internal
from nslfcore.data.transforms import PreprocessedCase, brain_mask, preprocess_case
from nslfcore.inference import DEFAULT_ROI, InferenceResult, Mode
from nslfcore.inference import run as infer
from nslfcore.metrics import (
    HD95_DEFINITIONS,
    HD95Definition,
    conspicuity_ratio,
    fusion_metrics,
    hd95_key,
    normal_white_matter,
    segmentation_metrics,
)
from nslfcore.metrics.fusion_2d import METRICS_2D, fusion_metrics_2d, require_metrics_2d, select_axial_slices
from nslfcore.models import Network

FUSION_COLUMNS = ("ssim", "psnr", "nmi", "sfr")
#: Lesion conspicuity (labelled cases, :func:`nslfcore.metrics.conspicuity_ratio`): the fused volume's whole-tumour
#: CNR against normal-appearing white matter over the best source's, the fused CNR, the best source's CNR.
CONSPICUITY_COLUMNS = ("cnr_ratio", "cnr_fused", "cnr_best")
#: The 2-D fusion columns (``slices_2d``): FSIM, VIFP, NMI and IFC on axial slice pairs.
FUSION_2D_COLUMNS = METRICS_2D
SEGMENTATION_COLUMNS = ("dice", "sensitivity", "specificity", "accuracy", "jaccard", "hd95")
#: The columns of the table with the pooled HD95 (see :func:`nslfcore.metrics.hd95`).
SEGMENTATION_COLUMNS_POOLED = (*SEGMENTATION_COLUMNS[:-1], "hd95_pooled")
REGION_NAMES = ("ET", "TC", "WT")
#: A sliding window ``(z, y, x)`` in voxels.
Window = tuple[int, int, int]


def inference_mode(window: Sequence[int] | None) -> tuple[Mode, Window]:
    """:func:`nslfcore.inference.run`'s ``mode`` and ``roi``: its automatic choice for ``None``, else a
    sliding ``window`` ``(z, y, x)`` (voxels). Raises :class:`ValueError` for a window that is not three positive sizes."""
    if window is None:
        return "auto", DEFAULT_ROI
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"a sliding window is three positive sizes (z, y, x), got {tuple(window)}.")
    return "sliding", (int(window[0]), int(window[1]), int(window[2]))


def _fusion_2d_row(case: Case, fused: np.ndarray | None, slices_2d: int) -> dict[str, float | str]:
    """The 2-D fusion columns: the fused volume's axial slices (case grid) against the normalised sources'."""
    row: dict[str, float | str] = {k: math.nan for k in FUSION_2D_COLUMNS}
    if fused is None:
        return row
    prepared = preprocess_case(case)
    sources = prepared.record.uncrop(prepared.image)  # (4, z, y, x) on the case grid, 0 outside the brain box
    slices = select_axial_slices(brain_mask(case.stacked()), slices_2d)
    metrics = fusion_metrics_2d(fused, sources, slices)
    return row | {k: float(metrics[k]) for k in FUSION_2D_COLUMNS} | {"slices_2d": len(slices)}


def _conspicuity_row(case: Case, prepared: PreprocessedCase, fused_box: np.ndarray) -> dict[str, float | str]:
    """:data:`CONSPICUITY_COLUMNS` of the fused volume in the brain box ``(z, y, x)`` against the normalised
    sources ``prepared.image`` (``(t1, t1ce, t2, flair)``); NaN (and no best source) where the CNR is undefined:
    no label, no whole tumour, no brain outside the lesion margin, or a fused volume constant over the NAWM."""
    row: dict[str, float | str] = {k: math.nan for k in CONSPICUITY_COLUMNS}
    if prepared.label is None or not (wt := prepared.label > 0).any():
        return row
    brain = prepared.record.crop(brain_mask(case.stacked()))
    t1 = prepared.image[MODALITIES.index("t1")]
    try:
        nawm = normal_white_matter(t1, brain, wt, spacing=case.geometry.spacing)
        c = conspicuity_ratio(fused_box, prepared.image, wt, nawm)
    except ValueError:
        return row
    return {"cnr_ratio": c["ratio"], "cnr_fused": c["cnr_fused"], "cnr_best": c["cnr_best"]}


def score_case(
    case: Case,
    fused: np.ndarray | None,
    labels: np.ndarray | None,
    hd95_definition: HD95Definition = "max",
    slices_2d: int | None = None,
) -> dict[str, float | str]:
    """One row for a labelled case and its results on the case grid (``(z, y, x)`` arrays).

    ``fused`` is the fused volume (normalised, [0, 1]) or ``None`` for a model that does not fuse
    (fusion columns are then NaN); ``labels`` is the predicted label map in BraTS 2021 labels, or
    ``None`` for a model that does not segment (no segmentation columns). Fusion metrics compare
    the fused volume with the four normalised sources inside the brain's box; segmentation metrics
    are per region over the whole grid, plus the ``*_brain`` variants; ``hd95_definition`` picks
    the HD95 column (``hd95`` or ``hd95_pooled``, :func:`nslfcore.metrics.hd95`). ``slices_2d``
    (``None``: none) adds :data:`FUSION_2D_COLUMNS` on up to that many axial slices and
    ``slices_2d``, the number used (NaN columns for a model that does not fuse). Every row has
    :data:`CONSPICUITY_COLUMNS`, NaN for a case without a label or a whole tumour, or a model that
    does not fuse.
    """
    row: dict[str, float | str] = {"case": case.name}
    if fused is not None:
        prepared = preprocess_case(case)
        fused_box = prepared.record.crop(fused)
        fusion = fusion_metrics(fused_box, prepared.image)
        row |= {k: float(fusion[k]) for k in FUSION_COLUMNS}
        row |= _conspicuity_row(case, prepared, fused_box)
    else:
        row |= {k: math.nan for k in (*FUSION_COLUMNS, *CONSPICUITY_COLUMNS)}
    if slices_2d is not None:
        row |= _fusion_2d_row(case, fused, slices_2d)
    if labels is None:
        return row
    if case.label is None:
        raise ValueError(f"{case.name} has no segmentation to score against; give a labelled case.")
    predicted = to_internal(labels, "brats2021")
    segmentation = segmentation_metrics(
        predicted,
        case.label,
        spacing=case.geometry.spacing,
        brain_mask=brain_mask(case.stacked()),
        hd95_definition=hd95_definition,
    )
    for region in REGION_NAMES:
        for metric, value in segmentation[region].items():
            row[f"{region}_{metric}"] = float(value)
    return row


def evaluate_case(
    files: CaseFiles,
    model: Network,
    device: str = "auto",
    hd95_definition: HD95Definition = "max",
    slices_2d: int | None = None,
    window: Sequence[int] | None = None,
) -> dict[str, float | str]:
    """:func:`score_case` of a network's results: NSLF's, a segmentation-only network's (NaN fusion
    columns) or a fusion-only network's (no segmentation columns; the case needs no label then).
    ``window``: infer with a sliding window of this size (see :func:`inference_mode`)."""
    case, result = infer_case(files, model, device, window)
    return score_case(case, result.fused, result.labels, hd95_definition, slices_2d)


def infer_case(files: CaseFiles, model: Network, device: str = "auto",
               window: Sequence[int] | None = None) -> tuple[Case, InferenceResult]:  # fmt: skip
    """Case ``files`` loaded and run through ``model`` as :func:`evaluate_case` scores it: everything the
    network outputs, labels in the BraTS 2021 convention (ET = 4), ``window`` as in :func:`inference_mode`."""
    mode, roi = inference_mode(window)
    case = load_case(files, require_label=model.segments)
    result = infer(case, model, fuse=model.fuses, segment=model.segments, device=device, label_convention="brats2021",
                   mode=mode, roi=roi)  # fmt: skip
    return case, result


def evaluate(
    cases: Sequence[CaseFiles],
    model: Network,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
    hd95_definition: HD95Definition = "max",
    slices_2d: int | None = None,
    window: Sequence[int] | None = None,
) -> list[dict[str, float | str]]:
    """Rows of :func:`evaluate_case` for every case (``slices_2d``: add the 2-D fusion columns;
    ``window``: infer with a sliding window of that size, :func:`inference_mode`)."""
    hd95_key(hd95_definition)  # a wrong definition or window fails before the first case
    inference_mode(window)
    if slices_2d is not None and slices_2d < 1:
        raise ValueError(f"--metrics-2d needs at least 1 slice, got {slices_2d}.")
    if slices_2d is not None:
        require_metrics_2d()
    rows = []
    for index, files in enumerate(cases):
        rows.append(evaluate_case(files, model, device, hd95_definition, slices_2d, window))
        if progress is not None:
            progress(index + 1, len(cases), files.name)
    return rows


def write_csv(rows: Sequence[dict[str, float | str]], path: str | Path) -> Path:
    """Write ``rows`` as CSV to ``path`` atomically (:func:`nslfcore.data.output.atomic_write_text`)."""
    import io

    from nslfcore.data.output import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def mean_sd(values: list[float]) -> str:
    """``"mean ± sd"`` of the finite ``values`` (4 decimals; sample sd, 0 for one value), ``"n/a"`` when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.4f} ± {sd:.4f}"


def region_means(rows: Sequence[dict[str, float | str]], metric: str) -> list[float]:
    """Per case, the mean of ``metric`` over ET, TC and WT (the paper's "mean" row)."""
    return [float(np.mean([float(r[f"{g}_{metric}"]) for g in REGION_NAMES])) for r in rows]


def _hd95_definition(rows: Sequence[dict[str, float | str]]) -> HD95Definition:
    """Which HD95 the rows hold: ``"pooled"`` when they have ``<region>_hd95_pooled`` columns, else ``"max"``."""
    return "pooled" if f"{REGION_NAMES[0]}_hd95_pooled" in rows[0] else "max"


def _segmentation_table(rows: Sequence[dict[str, float | str]], method: str | None) -> list[str]:
    lines = []
    prefix = f"| {method} " if method else ""
    columns = SEGMENTATION_COLUMNS_POOLED if _hd95_definition(rows) == "pooled" else SEGMENTATION_COLUMNS
    for region in REGION_NAMES:
        cells = [mean_sd([float(r[f"{region}_{m}"]) for r in rows]) for m in columns]
        lines.append(f"{prefix}| {region} | " + " | ".join(cells) + " |")
    means = [mean_sd(region_means(rows, m)) for m in columns]
    lines.append(f"{prefix}| mean | " + " | ".join(means) + " |")
    return lines


def summary_markdown(
    rows: Sequence[dict[str, float | str]],
    title: str,
    baseline_rows: Sequence[dict[str, float | str]] | None = None,
    method: str = "NSLF",
    baseline: str = "U-Net baseline",
) -> str:
    """The paper's layout: fusion (SSIM, PSNR, NMI, SFR) and segmentation (Dice, Sen, Spe, Acc per region and mean).

    Rows with a finite :data:`CONSPICUITY_COLUMNS` value get the lesion-conspicuity table under the fusion table.

    With ``baseline_rows`` the segmentation table gets a method column and the baseline's rows
    under NSLF's (the baseline does not fuse, so it has no fusion row). A line under the table
    names the HD95 definition of the rows; rows of a fusion-only network have no segmentation table.
    """
    lines = [f"# {title}", "", f"{len(rows)} cases; mean ± sd.", "", "## Fusion", ""]
    lines += ["| SSIM | PSNR (dB) | NMI | SFR |", "| --- | --- | --- | --- |"]
    lines.append("| " + " | ".join(mean_sd([float(r[k]) for r in rows]) for k in FUSION_COLUMNS) + " |")
    if CONSPICUITY_COLUMNS[0] in rows[0] and any(math.isfinite(float(r[CONSPICUITY_COLUMNS[0]])) for r in rows):
        lines += ["", "Lesion conspicuity, the whole tumour's CNR against normal-appearing white matter "
                  "(`nslfcore.metrics.conspicuity`):", ""]  # fmt: skip
        lines += ["| CNR fused / best source | CNR fused | CNR best source |", "| --- | --- | --- |"]
        lines.append("| " + " | ".join(mean_sd([float(r[k]) for r in rows]) for k in CONSPICUITY_COLUMNS) + " |")
    if FUSION_2D_COLUMNS[0] in rows[0]:
        pairs = sum(int(float(r.get("slices_2d", 0))) for r in rows)
        lines += ["", f"2-D, on {pairs} axial slice pairs in all (`nslfcore.metrics.fusion_2d`; IFC on a wavelet GSM, bits):", ""]
        lines += ["| FSIM | VIFP | NMI | IFC |", "| --- | --- | --- | --- |"]
        lines.append("| " + " | ".join(mean_sd([float(r[k]) for r in rows]) for k in FUSION_2D_COLUMNS) + " |")
    lines += ["", "## Segmentation", ""]
    tables = [(baseline, baseline_rows)] if baseline_rows else []
    if f"{REGION_NAMES[0]}_dice" in rows[0]:
        tables.insert(0, (method, rows))
    else:
        lines += [f"{method} does not segment.", ""]
    if not tables:
        return "\n".join(lines)
    definition = _hd95_definition(tables[0][1])
    if any(_hd95_definition(r) != definition for _, r in tables):
        raise ValueError("The method's and the baseline's rows use different HD95 definitions; score both with one.")
    hd95_name = "HD95 pooled" if definition == "pooled" else "HD95"
    header = f"| region | Dice | Sensitivity | Specificity | Accuracy | Jaccard | {hd95_name} (mm) |"
    rule = "| --- | --- | --- | --- | --- | --- | --- |"
    if baseline_rows is None:
        lines += [header, rule] + _segmentation_table(rows, None)
    else:
        lines += ["| method " + header, "| --- " + rule]
        lines += [line for name, r in tables for line in _segmentation_table(r, name)]
    lines += ["", "Specificity and accuracy are over the whole volume; `*_brain` columns of the CSV restrict them to the brain."]
    lines += ["", f"HD95 ({definition}): {HD95_DEFINITIONS[definition]}."]
    return "\n".join(lines) + "\n"
