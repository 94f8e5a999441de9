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
from nslfcore.data.case import CaseFiles
from nslfcore.data.labels import to_internal
from nslfcore.data.transforms import brain_mask, preprocess_case
from nslfcore.inference import run as infer
from nslfcore.metrics import fusion_metrics, segmentation_metrics
from nslfcore.models import NSLF

FUSION_COLUMNS = ("ssim", "psnr", "nmi", "sfr")
SEGMENTATION_COLUMNS = ("dice", "sensitivity", "specificity", "accuracy", "jaccard", "hd95")
REGION_NAMES = ("ET", "TC", "WT")


def evaluate_case(files: CaseFiles, model: NSLF, device: str = "auto") -> dict[str, float | str]:
    """One row: ``case``, the four fusion metrics, and ``<region>_<metric>`` for every region and metric."""
    case = load_case(files, require_label=True)
    result = infer(case, model, device=device, label_convention="brats2021")
    prepared = preprocess_case(case)
    fused_box = prepared.record.crop(result.fused)
    row: dict[str, float | str] = {"case": case.name}
    fusion = fusion_metrics(fused_box, prepared.image)
    row |= {k: float(fusion[k]) for k in FUSION_COLUMNS}
    predicted = to_internal(result.labels, "brats2021")
    segmentation = segmentation_metrics(
        predicted, case.label, spacing=case.geometry.spacing, brain_mask=brain_mask(case.stacked())
    )
    for region in REGION_NAMES:
        for metric, value in segmentation[region].items():
            row[f"{region}_{metric}"] = float(value)
    return row


def evaluate(
    cases: Sequence[CaseFiles],
    model: NSLF,
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
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _mean_sd(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.4f} ± {sd:.4f}"


def summary_markdown(rows: Sequence[dict[str, float | str]], title: str) -> str:
    """The paper's layout: fusion (SSIM, PSNR, NMI, SFR) and segmentation (Dice, Sen, Spe, Acc per region and mean)."""
    lines = [f"# {title}", "", f"{len(rows)} cases; mean ± sd.", "", "## Fusion", ""]
    lines += ["| SSIM | PSNR (dB) | NMI | SFR |", "| --- | --- | --- | --- |"]
    lines.append("| " + " | ".join(_mean_sd([float(r[k]) for r in rows]) for k in FUSION_COLUMNS) + " |")
    lines += ["", "## Segmentation", "", "| region | Dice | Sensitivity | Specificity | Accuracy | Jaccard | HD95 (mm) |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for region in REGION_NAMES:
        cells = [_mean_sd([float(r[f"{region}_{m}"]) for r in rows]) for m in SEGMENTATION_COLUMNS]
        lines.append(f"| {region} | " + " | ".join(cells) + " |")
    means = [_mean_sd([float(np.mean([float(r[f"{g}_{m}"]) for g in REGION_NAMES])) for r in rows]) for m in SEGMENTATION_COLUMNS]
    lines.append("| mean | " + " | ".join(means) + " |")
    lines += ["", "Specificity and accuracy are over the whole volume; `*_brain` columns of the CSV restrict them to the brain."]
    return "\n".join(lines) + "\n"
