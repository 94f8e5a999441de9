"""The paper's comparison tables for any labelled dataset: NSLF and its baselines side by side (issue 16.5).

``nslf compare --data DIR --out DIR`` runs every method over every case through the same inference
and metrics as ``nslf evaluate`` (:func:`nslfcore.evaluation.evaluate_case`) and writes:

``cases/<method>.csv``
    one row per case, rewritten atomically after every case; a case already in it is not run again,
    so an interrupted comparison resumes where it stopped (the settings are in ``settings.json``;
    a resume with other settings is refused rather than mixing rows). Every method infers the
    same way: :func:`nslfcore.inference.run`'s automatic choice, or with ``window`` (``--window``)
    a sliding window of that size (:func:`nslfcore.evaluation.inference_mode`).
``tables.md``
    the paper's layout, mean +- sd over cases: fusion in 3-D (SSIM, PSNR, NMI, SFR), fusion in 2-D
    (FSIM, VIFP, NMI, IFC on axial slice pairs, with ``slices_2d``) and segmentation (Dice,
    sensitivity, specificity and HD95 per region), one row per method; the HD95 definition is
    named (default ``pooled``: medpy's, as the authors' scripts).
``fused_slices.png``, ``segmentation_slices.png`` and ``dice_boxplot.png``
    the same axial slice fused by each fusing method beside the four sources, the first case
    segmented by each segmenting method beside the reference (a tumour slice and a tumour-free
    one) (:mod:`nslfcore.comparison_figures`), and the per-case Dice of each segmenting method.

Methods are named as ``nslf evaluate --model`` takes them: a model id or file (NSLF, or a
segmentation baseline file, whose ``kind`` says which network), or ``classical:<name>``
(:mod:`nslfcore.fusion_baselines`). Arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nslfcore.data.brats import find_cases
from nslfcore.data.case import CaseFiles
from nslfcore.data.output import OutputLock, atomic_write_text
from nslfcore.evaluation import (
    FUSION_2D_COLUMNS,
    FUSION_COLUMNS,
    REGION_NAMES,
    infer_case,
    inference_mode,
    mean_sd,
    score_case,
    write_csv,
)
from nslfcore.fusion_baselines import CLASSICAL_PREFIX, FUSION_METHODS, ClassicalFusion
from nslfcore.inference import InferenceResult
from nslfcore.metrics import HD95_DEFINITIONS, HD95Definition, hd95_key
from nslfcore.models import Network

#: The default methods: the shipped NSLF model and every classical fusion method.
DEFAULT_METHODS: tuple[str, ...] = ("shipped", *(f"{CLASSICAL_PREFIX}{name}" for name in FUSION_METHODS))
Progress = Callable[[str, int, int, str], None]


@dataclass
class Method:
    """A method of the comparison: its spec (as ``--methods`` names it), a file-safe name and the network."""

    spec: str
    name: str
    network: Network


def load_method(spec: str) -> Method:
    """The network of ``spec``: ``shipped`` (the default model), a model id or file, or ``classical:<name>``."""
    from nslfcore.model_store import load_model

    if spec.startswith(CLASSICAL_PREFIX):
        return Method(spec, spec.removeprefix(CLASSICAL_PREFIX), ClassicalFusion(spec.removeprefix(CLASSICAL_PREFIX)))
    model, info = load_model(None if spec == "shipped" else spec)
    name = info.id if spec == "shipped" or not spec.endswith(".pt") else Path(spec).stem
    return Method(spec, re.sub(r"[^A-Za-z0-9._-]+", "-", name), model)


def read_rows(path: Path) -> list[dict[str, float | str]]:
    """The rows of a per-method CSV (numbers as floats, ``case`` as text); none when it does not exist."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{k: (v if k == "case" else float(v)) for k, v in row.items()} for row in csv.DictReader(handle)]


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "settings.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != settings:
            raise ValueError(f"{out} holds a comparison with other settings ({before}); use a new --out folder.")
    else:
        atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def _light(result: InferenceResult) -> InferenceResult:
    """``result`` without its class probabilities (four float32 volumes), for keeping."""
    return dataclasses.replace(result, probabilities=None)


def run_method(method: Method, cases: Sequence[CaseFiles], out: Path, device: str, hd95_definition: HD95Definition,
               slices_2d: int | None, progress: Progress | None = None, window: Sequence[int] | None = None,
               first_case: dict[str, InferenceResult] | None = None) -> list[dict[str, float | str]]:  # fmt: skip
    """Rows of ``method`` on ``cases``, resuming from ``out/cases/<name>.csv`` (rewritten after every case);
    ``window``: a sliding window ``(z, y, x)`` for inference (``None``: the automatic choice).
    ``first_case``: when given and the first case runs now (not resumed), its fused volume and labels
    (no probabilities) are kept there under the method's name, for the figures."""
    path = out / "cases" / f"{method.name}.csv"
    rows = read_rows(path)
    done = {str(r["case"]) for r in rows}
    for index, files in enumerate(cases):
        if files.name not in done:
            case, result = infer_case(files, method.network, device, window)
            rows.append(score_case(case, result.fused, result.labels, hd95_definition, slices_2d))
            if index == 0 and first_case is not None:
                first_case[method.name] = _light(result)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_csv(rows, path)
        if progress is not None:
            progress(method.name, index + 1, len(cases), files.name)
    order = {files.name: i for i, files in enumerate(cases)}
    return sorted((r for r in rows if str(r["case"]) in order), key=lambda r: order[str(r["case"])])


def _column(rows: Sequence[dict[str, float | str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if key in r]


def fuses(rows: Sequence[dict[str, float | str]]) -> bool:
    """Whether the rows have fusion numbers (a segmentation-only network's are NaN)."""
    return any(math.isfinite(v) for v in _column(rows, FUSION_COLUMNS[0]))


def segments(rows: Sequence[dict[str, float | str]]) -> bool:
    """Whether the rows have segmentation columns."""
    return bool(rows) and f"{REGION_NAMES[0]}_dice" in rows[0]


def tables_markdown(results: dict[str, list[dict[str, float | str]]], data: str, hd95_definition: HD95Definition) -> str:
    """The fusion (3-D, 2-D) and segmentation tables, one row per method, mean +- sd over cases."""
    n = max((len(rows) for rows in results.values()), default=0)
    lines = [f"# Comparison on {data}", "", f"{n} cases; mean ± sd over cases; every method through the same "
             "inference and metrics (`nslf compare`).", "", "## Fusion (3-D, inside the brain's box)", ""]  # fmt: skip
    lines += ["| method | SSIM | PSNR (dB) | NMI | SFR |", "| --- | --- | --- | --- | --- |"]
    fusing = {name: rows for name, rows in results.items() if fuses(rows)}
    for name, rows in fusing.items():
        lines.append(f"| {name} | " + " | ".join(mean_sd(_column(rows, k)) for k in FUSION_COLUMNS) + " |")
    if any(FUSION_2D_COLUMNS[0] in rows[0] for rows in fusing.values() if rows):
        lines += ["", "## Fusion (2-D, axial slice pairs, `nslfcore.metrics.fusion_2d`)", ""]
        lines += ["| method | FSIM | VIFP | NMI | IFC |", "| --- | --- | --- | --- | --- |"]
        for name, rows in fusing.items():
            lines.append(f"| {name} | " + " | ".join(mean_sd(_column(rows, k)) for k in FUSION_2D_COLUMNS) + " |")
    segmenting = {name: rows for name, rows in results.items() if segments(rows)}
    if segmenting:
        hd95 = hd95_key(hd95_definition)
        head = " | ".join(f"Dice {r}" for r in REGION_NAMES) + " | " + " | ".join(f"HD95 {r} (mm)" for r in REGION_NAMES)
        sens = " | ".join(f"Sens {r}" for r in REGION_NAMES) + " | " + " | ".join(f"Spec {r}" for r in REGION_NAMES)
        lines += ["", "## Segmentation", "", f"| method | {head} | {sens} |", "| --- |" + " --- |" * 12]
        for name, rows in segmenting.items():
            cells = [mean_sd(_column(rows, f"{r}_{m}")) for m in ("dice", hd95, "sensitivity", "specificity")
                     for r in REGION_NAMES]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"HD95 ({hd95_definition}): {HD95_DEFINITIONS[hd95_definition]}."]
    return "\n".join(lines) + "\n"


def compare(
    data: str | Path,
    out: str | Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    device: str = "auto",
    hd95_definition: HD95Definition = "pooled",
    slices_2d: int | None = None,
    limit: int | None = None,
    figures: bool = True,
    progress: Progress | None = None,
    window: Sequence[int] | None = None,
) -> dict[str, Path]:
    """Run ``methods`` on the labelled cases of ``data`` and write the tables and figures into ``out``.

    Returns the written files by role (``tables``, ``fused_slices``, ``segmentation_slices``,
    ``dice_boxplot``, one ``cases/...`` per method). Raises :class:`ValueError` for an unknown
    method, an empty folder, a bad ``window`` or an ``out`` that holds a comparison with other settings.
    ``window`` ``(z, y, x)`` voxels: every method infers with a sliding window of that size.
    """
    hd95_key(hd95_definition)
    mode, roi = inference_mode(window)
    data, out = Path(data), Path(out)
    cases = find_cases(data)[:limit]
    if not cases:
        raise ValueError(f"{data}: no cases found.")
    loaded = [load_method(spec) for spec in methods]  # every method loads before the first case runs
    if len({m.name for m in loaded}) != len(loaded):
        raise ValueError(f"two methods share a name: {[m.name for m in loaded]}")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with OutputLock(out, "nslf compare"):
        settings: dict[str, object] = {"data": str(data.resolve()), "hd95": hd95_definition, "slices_2d": slices_2d,
                                       "cases": [c.name for c in cases]}  # fmt: skip
        if mode == "sliding":  # absent for the automatic choice, so folders written before --window stay valid
            settings["window"] = list(roi)
        _check_settings(out, settings)
        results = {}
        first_case: dict[str, InferenceResult] = {}  # case 0's outputs by method, so the figures need not infer again
        for method in loaded:
            results[method.name] = run_method(method, cases, out, device, hd95_definition, slices_2d, progress, window,
                                              first_case if figures else None)  # fmt: skip
            written[f"cases/{method.name}"] = out / "cases" / f"{method.name}.csv"
        written["tables"] = atomic_write_text(out / "tables.md", tables_markdown(results, str(data), hd95_definition))
        if figures:
            from nslfcore.comparison_figures import dice_boxplot, fused_slices_figure, segmentation_slices_figure

            fusing = [m for m in loaded if m.network.fuses]
            segmenting = {name: rows for name, rows in results.items() if segments(rows)}
            for method in loaded:  # methods resumed past case 0 run it once here, for both figures
                if method.name not in first_case and (method.network.fuses or method.name in segmenting):
                    first_case[method.name] = _light(infer_case(cases[0], method.network, device, window)[1])
            if fusing:
                written["fused_slices"] = fused_slices_figure(cases[0], fusing, out / "fused_slices.png", device, window,
                                                              first_case)  # fmt: skip
            if segmenting:
                written["dice_boxplot"] = dice_boxplot(segmenting, out / "dice_boxplot.png")
                written["segmentation_slices"] = segmentation_slices_figure(
                    cases[0], [m for m in loaded if m.name in segmenting], out / "segmentation_slices.png", device,
                    segmenting, window, first_case)  # fmt: skip
    return written
