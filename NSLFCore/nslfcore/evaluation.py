"""Evaluate a model on labelled cases: per-case metrics and the paper's summary table.

For each case: :func:`nslfcore.inference.run` (fused volume + labels on the input grid), then the
fusion metrics of the fused volume against the four normalised sources inside the brain's box
(:func:`nslfcore.metrics.fusion_metrics`) and the segmentation metrics per region ET/TC/WT on the
whole grid, with the brain-mask variants (:func:`nslfcore.metrics.segmentation_metrics`).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nslfcore.data.brats import load_case
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.labels import to_internal
from nslfcore.data.transforms import brain_mask, preprocess_case
from nslfcore.inference import run as infer
from nslfcore.metrics import fusion_metrics, segmentation_metrics
from nslfcore.models import Network

FUSION_COLUMNS = ("ssim", "psnr", "nmi", "sfr")
SEGMENTATION_COLUMNS = ("dice", "sensitivity", "specificity", "accuracy", "jaccard", "hd95")
REGION_NAMES = ("ET", "TC", "WT")


def score_case(case: Case, fused: np.ndarray | None, labels: np.ndarray) -> dict[str, float | str]:
    """One row for a labelled case and its results on the case grid (``(z, y, x)`` arrays).

    ``fused`` is the fused volume (normalised, [0, 1]) or ``None`` for a model that does not fuse
    (fusion columns are then NaN); ``labels`` is the predicted label map in BraTS 2021 labels.
    Fusion metrics compare the fused volume with the four normalised sources inside the brain's
    box; segmentation metrics are per region over the whole grid, plus the ``*_brain`` variants.
    """
    row: dict[str, float | str] = {"case": case.name}
    if fused is not None:
        prepared = preprocess_case(case)
        fusion = fusion_metrics(prepared.record.crop(fused), prepared.image)
        row |= {k: float(fusion[k]) for k in FUSION_COLUMNS}
    else:
        row |= {k: math.nan for k in FUSION_COLUMNS}
    if case.label is None:
        raise ValueError(f"{case.name} has no segmentation to score against; give a labelled case.")
    predicted = to_internal(labels, "brats2021")
    segmentation = segmentation_metrics(
        predicted, case.label, spacing=case.geometry.spacing, brain_mask=brain_mask(case.stacked())
    )
    for region in REGION_NAMES:
        for metric, value in segmentation[region].items():
            row[f"{region}_{metric}"] = float(value)
    return row


def evaluate_case(files: CaseFiles, model: Network, device: str = "auto") -> dict[str, float | str]:
    """:func:`score_case` of NSLF's results (or a segmentation-only network's, without fusion columns)."""
    case = load_case(files, require_label=True)
    result = infer(case, model, fuse=model.fuses, device=device, label_convention="brats2021")
    assert result.labels is not None  # run() segments by default
    return score_case(case, result.fused, result.labels)


def evaluate(
    cases: Sequence[CaseFiles],
    model: Network,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, float | str]]:
    """Rows of :func:`evaluate_case` for every case."""
    rows = []
    for index, files in enumerate(cases):
        rows.append(evaluate_case(files, model, device))
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


def _mean_sd(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.4f} ± {sd:.4f}"


def region_means(rows: Sequence[dict[str, float | str]], metric: str) -> list[float]:
    """Per case, the mean of ``metric`` over ET, TC and WT (the paper's "mean" row)."""
    return [float(np.mean([float(r[f"{g}_{metric}"]) for g in REGION_NAMES])) for r in rows]


def _segmentation_table(rows: Sequence[dict[str, float | str]], method: str | None) -> list[str]:
    lines = []
    prefix = f"| {method} " if method else ""
    for region in REGION_NAMES:
        cells = [_mean_sd([float(r[f"{region}_{m}"]) for r in rows]) for m in SEGMENTATION_COLUMNS]
        lines.append(f"{prefix}| {region} | " + " | ".join(cells) + " |")
    means = [_mean_sd(region_means(rows, m)) for m in SEGMENTATION_COLUMNS]
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

    With ``baseline_rows`` the segmentation table gets a method column and the baseline's rows
    under NSLF's (the baseline does not fuse, so it has no fusion row).
    """
    lines = [f"# {title}", "", f"{len(rows)} cases; mean ± sd.", "", "## Fusion", ""]
    lines += ["| SSIM | PSNR (dB) | NMI | SFR |", "| --- | --- | --- | --- |"]
    lines.append("| " + " | ".join(_mean_sd([float(r[k]) for r in rows]) for k in FUSION_COLUMNS) + " |")
    header = "| region | Dice | Sensitivity | Specificity | Accuracy | Jaccard | HD95 (mm) |"
    rule = "| --- | --- | --- | --- | --- | --- | --- |"
    lines += ["", "## Segmentation", ""]
    if baseline_rows is None:
        lines += [header, rule] + _segmentation_table(rows, None)
    else:
        lines += ["| method " + header, "| --- " + rule]
        lines += _segmentation_table(rows, method) + _segmentation_table(baseline_rows, baseline)
    lines += ["", "Specificity and accuracy are over the whole volume; `*_brain` columns of the CSV restrict them to the brain."]
    return "\n".join(lines) + "\n"
