"""``nslf score``: metrics of results already on disk (a label map and a fused volume) against a labelled case."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="score a label map (and a fused volume) against a labelled case, without running a model"
    )
    parser.add_argument("--case", type=Path, required=True, help="labelled case folder (the four sources and seg)")
    parser.add_argument("--labels", type=Path, required=True, help="predicted label map in BraTS 2021 labels {0,1,2,4}")
    parser.add_argument("--fused", type=Path, default=None, help="fused volume (normalised, as nslf run writes it)")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")
    parser.set_defaults(func=run)


def _read_on_grid(path: Path, geometry, what: str) -> np.ndarray:
    from nslfcore.data.io import read_image

    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
    array, grid = read_image(path)
    if grid.shape != geometry.shape or not np.allclose(grid.ijk_to_lps(), geometry.ijk_to_lps(), atol=1e-3):
        raise ValueError(f"{what} {path} is not on the grid of the case; score results written for this case.")
    return array


def format_scores(row: dict[str, float | str]) -> str:
    """A short plain-text table: Dice / HD95 / sensitivity / specificity per region, then the fusion metrics and
    the lesion conspicuity (the fused whole-tumour CNR over the best source's) where they are defined."""
    from nslfcore.evaluation import FUSION_COLUMNS, REGION_NAMES

    lines = [f"{'region':6s} {'Dice':>7s} {'HD95 mm':>8s} {'Sens':>7s} {'Spec':>7s}"]
    for region in REGION_NAMES:
        lines.append(
            f"{region:6s} {row[f'{region}_dice']:7.4f} {row[f'{region}_hd95']:8.2f} "
            f"{row[f'{region}_sensitivity']:7.4f} {row[f'{region}_specificity']:7.4f}"
        )
    if not math.isnan(float(row["ssim"])):
        lines.append("fusion: " + ", ".join(f"{k.upper()} {float(row[k]):.4f}" for k in FUSION_COLUMNS))
    if not math.isnan(float(row.get("cnr_ratio", math.nan))):
        lines.append(f"lesion CNR: fused / best source {float(row['cnr_ratio']):.3f} (fused {float(row['cnr_fused']):.3f}, "
                     f"best source {float(row['cnr_best']):.3f})")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from nslfcore.data.brats import find_cases, load_case
    from nslfcore.data.validation import DataValidationError
    from nslfcore.evaluation import score_case

    try:
        cases = find_cases(args.case) if args.case.is_dir() else []
        if len(cases) != 1:
            raise ValueError(f"--case {args.case}: give the folder of one labelled case.")
        case = load_case(cases[0], require_label=True)
        labels = _read_on_grid(args.labels, case.geometry, "Label map")
        fused = _read_on_grid(args.fused, case.geometry, "Fused volume").astype(np.float32) if args.fused else None
        row = score_case(case, fused, labels)
    except (ValueError, FileNotFoundError, DataValidationError) as error:
        print(f"nslf score: error: {error}", file=sys.stderr)
        return 1
    print(f"{case.name}: predicted {args.labels.name} against the reference labels")
    print(format_scores(row))
    if args.json is not None:
        from nslfcore.data.output import atomic_write_text

        atomic_write_text(args.json, json.dumps(row, indent=2))
    return 0
