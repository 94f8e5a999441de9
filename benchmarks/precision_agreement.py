"""Label agreement of the shipped model's lower-precision CPU pass with float32, on held-out cases.

Issue 14's condition for a lower precision: labels agreeing with fp32 to Dice >= 0.99 per region.
For each case, :func:`nslfcore.inference.run` in ``fp32`` and in ``bf16`` (CPU autocast; what
``precision="auto"`` picks on CPUs with native bf16), then Dice ET / TC / WT between the two label
maps and the mean absolute difference of the fused volumes over the brain (intensities in [0, 1]).

    python benchmarks/precision_agreement.py --data phantom-test [--limit 5] [--model M]

Writes ``benchmarks/results/precision_agreement_<model id>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.labels import REGIONS, to_internal
from nslfcore.inference import run
from nslfcore.metrics import overlap_metrics
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"


def region_dice(a_labels: np.ndarray, b_labels: np.ndarray) -> dict[str, float]:
    """Dice per region (ET, TC, WT) between two BraTS 2021 label maps of one grid."""
    a, b = to_internal(a_labels, "brats2021"), to_internal(b_labels, "brats2021")
    return {name: overlap_metrics(np.isin(a, c), np.isin(b, c))["dice"] for name, c in REGIONS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of cases (BraTS layout)")
    parser.add_argument("--model", default=None, help="model id or file (default: the shipped default)")
    parser.add_argument("--limit", type=int, default=5, help="first N cases")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    model, info = load_model(args.model, device="cpu")
    rows = []
    for files in find_cases(args.data)[: args.limit]:
        case = load_case(files)
        fp32 = run(case, model, device="cpu", precision="fp32")
        bf16 = run(case, model, device="cpu", precision="bf16")
        brain = fp32.fused > 0
        row = {"case": case.name, **region_dice(bf16.labels, fp32.labels),
               "fused_mean_abs_diff": float(np.abs(bf16.fused - fp32.fused)[brain].mean()),
               "changed_voxels": int((bf16.labels != fp32.labels).sum())}  # fmt: skip
        rows.append(row)
        print(f"{case.name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in row.items() if k != "case"), flush=True)  # fmt: skip
    summary = {r: {"min": min(x[r] for x in rows), "mean": statistics.fmean(x[r] for x in rows)} for r in REGIONS}
    result = {"benchmark": "precision_agreement", "date": time.strftime("%Y-%m-%d %H:%M"), "model": info.id,
              "data": str(args.data), "cases": len(rows), "rows": rows, "dice_bf16_vs_fp32": summary}  # fmt: skip
    path = args.out or RESULTS / f"precision_agreement_{info.id}.json"
    path.write_text(json.dumps(result, indent=2))
    print("\n| region | min Dice bf16 vs fp32 | mean |\n| --- | ---: | ---: |")
    for region, values in summary.items():
        print(f"| {region} | {values['min']:.4f} | {values['mean']:.4f} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
