"""Accuracy: the shipped NSLF model versus a segmentation baseline (by default the plain 3-D U-Net) on held-out cases.

Held-out cases: ``nslf phantom --out phantom-test --n 20 --seed 2000 --start 1000`` (the shipped
model was trained on seed 1000, cases 0-23; no test case was seen in training or validation).
The baseline is :mod:`nslfcore.baseline` trained with the same segmentation budget as NSLF's
stage 3 (same training cases, crops 48 x 112 x 112, 20 epochs of 19 steps, lr 1e-3, same loss):
``nslf baseline --data phantom-train --out runs/unet-baseline --epochs 20 --crop 48 112 112``; the other
architectures with ``--arch vnet|attention_unet|unetplusplus|segresnet|voxresnet``
(:mod:`nslfcore.segmentation_baselines`). The JSON keeps the key ``unet_baseline`` for whichever
baseline was given (``baseline_arch`` names it), so older result files read the same.

Both are evaluated by :func:`nslfcore.evaluation.evaluate` (inference on the original grid, Dice,
sensitivity, specificity, accuracy, Jaccard and HD95 per region ET/TC/WT; NSLF's fusion metrics
SSIM, PSNR, NMI, SFR against the four sources). Writes ``benchmarks/results/accuracy.json``
(per-case rows and means), ``benchmarks/results/accuracy_summary.md`` (the paper's layout) and
prints Markdown rows.

    python benchmarks/accuracy.py --data phantom-test [--baseline runs/unet-baseline/baseline_best.pt] [--model M]
                                  [--name accuracy]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from nslfcore.baseline import load_baseline
from nslfcore.data.brats import find_cases
from nslfcore.evaluation import FUSION_COLUMNS, REGION_NAMES, evaluate, region_means, summary_markdown
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"
METRICS = ("dice", "hd95", "sensitivity", "specificity", "accuracy", "jaccard")


def means(rows: list[dict]) -> dict[str, float]:
    """Mean over cases of every region metric, the region means, and the fusion metrics."""
    out: dict[str, float] = {}
    for metric in METRICS:
        for region in REGION_NAMES:
            out[f"{region}_{metric}"] = statistics.fmean(float(r[f"{region}_{metric}"]) for r in rows)
        out[f"mean_{metric}"] = statistics.fmean(region_means(rows, metric))
    for key in FUSION_COLUMNS:
        values = [float(r[key]) for r in rows if np.isfinite(float(r[key]))]
        out[key] = statistics.fmean(values) if values else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out labelled cases")
    parser.add_argument("--baseline", type=Path, default=None, help="baseline file from nslf baseline (omit: NSLF only)")
    parser.add_argument("--model", default=None, help="NSLF model (default: the shipped model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--name", default="accuracy", help="result files: results/NAME.json and results/NAME_summary.md")
    args = parser.parse_args()

    cases = find_cases(args.data)[: args.limit]
    model, info = load_model(args.model)
    baseline = load_baseline(args.baseline) if args.baseline is not None else None

    def progress(i: int, n: int, name: str) -> None:
        print(f"[{i}/{n}] {name}", flush=True)

    start = time.perf_counter()
    rows = evaluate(cases, model, args.device, progress)
    nslf_s = time.perf_counter() - start
    start = time.perf_counter()
    baseline_rows = evaluate(cases, baseline, args.device, progress) if baseline is not None else []
    baseline_s = time.perf_counter() - start
    result = {
        "benchmark": "accuracy",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "data": str(args.data),
        "cases": len(cases),
        "model": info.id,
        "baseline": None if args.baseline is None else str(args.baseline),
        "baseline_arch": None if baseline is None else baseline.arch,
        "nslf": means(rows),
        "unet_baseline": means(baseline_rows) if baseline_rows else None,
        "seconds": {"nslf": nslf_s, "unet_baseline": baseline_s},
        "rows": {"nslf": rows, "unet_baseline": baseline_rows},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    label = "" if baseline is None else f"{baseline.title} baseline"
    title = f"NSLF ({info.id}){' vs ' + label if baseline_rows else ''} on {len(cases)} held-out phantom cases"
    summary = summary_markdown(rows, title, baseline_rows or None, baseline=label or "U-Net baseline")
    (RESULTS / f"{args.name}_summary.md").write_text(summary)
    print(summary)
    methods = [("NSLF " + info.id, "nslf")] + ([(label, "unet_baseline")] if baseline_rows else [])
    for name, key in methods:
        m = result[key]
        print(f"| {result['date']} | {name} | {len(cases)} | " + " | ".join(
            f"{m[f'{r}_dice']:.3f}" for r in REGION_NAMES) + f" | {m['mean_dice']:.3f} | " + " | ".join(
            f"{m[f'{r}_hd95']:.1f}" for r in REGION_NAMES) + " | " + " | ".join(
            "n/a" if not np.isfinite(m[k]) else f"{m[k]:.4f}" for k in FUSION_COLUMNS) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
