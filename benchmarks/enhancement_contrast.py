"""T1ce enhancement after normalisation, and the shipped model with vessel-bright T1ce (issue 15 point 2).

For each held-out case: :func:`nslfcore.data.enhancement.enhancement_contrast` of T1ce raw and after
the default ``robust`` normalisation (where ET lies in [0, 1], and its separability from healthy
brain and the rest of the tumour); then the same T1ce with bright vessels
(:func:`~nslfcore.data.enhancement.add_bright_vessels`, ``--factors`` x ET's 99th percentile: real
T1ce has such structures, the phantoms do not), and the shipped model's Dice ET / TC / WT on the
clean and the vessel cases (``run()``, this CPU, fp32).

    python benchmarks/enhancement_contrast.py --data phantom-test [--limit 5] [--factors 1.5 2.0] [--model FILE]

Writes ``benchmarks/results/enhancement_contrast.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.enhancement import add_bright_vessels, enhancement_contrast
from nslfcore.data.labels import ET, REGIONS, to_internal
from nslfcore.data.transforms import brain_mask, normalize
from nslfcore.inference import run
from nslfcore.metrics import overlap_metrics
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"
T1CE = 1  # channel of T1ce in the (t1, t1ce, t2, flair) stack


def dice_per_region(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice ET / TC / WT of a predicted BraTS 2021 label map against internal reference labels."""
    internal = to_internal(predicted, "brats2021")
    return {name: overlap_metrics(np.isin(internal, c), np.isin(reference, c))["dice"] for name, c in REGIONS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--factors", type=float, nargs="+", default=[1.5, 2.0])
    parser.add_argument("--out", type=Path, default=RESULTS / "enhancement_contrast.json")
    parser.add_argument("--model", default=None, help="NSLF model id or file (default: the shipped model)")
    args = parser.parse_args()

    model, info = load_model(args.model, device="cpu")
    rows = []
    for files in find_cases(args.data)[: args.limit]:
        case = load_case(files, require_label=True)
        if not (case.label == ET).any():
            continue
        stack = case.stacked()
        brain = brain_mask(stack)
        row: dict = {"case": case.name, "raw": enhancement_contrast(stack[T1CE], case.label, brain).as_dict()}
        row["robust"] = enhancement_contrast(normalize(stack, brain)[T1CE], case.label, brain).as_dict()
        row["dice"] = {"clean": dice_per_region(run(case, model, device="cpu", precision="fp32").labels, case.label)}
        for factor in args.factors:
            t1ce = add_bright_vessels(case.images["t1ce"], case.label, brain, factor, seed=len(rows))
            stressed = dataclasses.replace(case, images={**case.images, "t1ce": t1ce})
            s_stack = stressed.stacked()
            row[f"robust_vessels_{factor:g}"] = enhancement_contrast(normalize(s_stack, brain)[T1CE], case.label, brain).as_dict()
            labels = run(stressed, model, device="cpu", precision="fp32").labels
            row["dice"][f"vessels_{factor:g}"] = dice_per_region(labels, case.label)
        rows.append(row)
        print(case.name, json.dumps({k: row[k] for k in row if k != "case"}), flush=True)

    variants = ["raw", "robust", *[f"robust_vessels_{f:g}" for f in args.factors]]
    summary = {v: {k: statistics.fmean(r[v][k] for r in rows) for k in ("et_median", "healthy_median", "gap",
                                                                        "auc_vs_healthy", "auc_vs_other_tumour")}
               for v in variants}  # fmt: skip
    dice = {d: {r: statistics.fmean(row["dice"][d][r] for row in rows) for r in REGIONS} for d in rows[0]["dice"]}
    result = {"benchmark": "enhancement_contrast", "date": time.strftime("%Y-%m-%d %H:%M"), "model": info.id,
              "cases": len(rows), "factors": args.factors, "mean": summary, "mean_dice": dice, "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2))
    print("\n| T1ce | ET median | healthy median | ET median - healthy p99 | AUC ET vs healthy | AUC ET vs NCR+ED |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for variant, m in summary.items():
        print(f"| {variant} | {m['et_median']:.3f} | {m['healthy_median']:.3f} | {m['gap']:.3f} | "
              f"{m['auc_vs_healthy']:.3f} | {m['auc_vs_other_tumour']:.3f} |")  # fmt: skip
    print("\n| input | Dice ET | TC | WT |\n| --- | ---: | ---: | ---: |")
    for name, d in dice.items():
        print(f"| {name} | {d['ET']:.3f} | {d['TC']:.3f} | {d['WT']:.3f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
