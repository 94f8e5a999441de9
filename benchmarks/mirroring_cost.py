"""The time and accuracy of test-time mirroring (issue 31 point 4) on one realistic case, on the CPU.

:func:`nslfcore.inference.run` with ``mirror="none"``, ``"lr"`` and ``"all"`` (1, 2 and 8 network
passes, :mod:`nslfcore.inference.mirroring`) on one MNI phantom case (240 x 240 x 155,
``generate_case(seed=2000, index=1000)``: never used in training) with the shipped default model,
repetitions interleaved (none, lr, all, none, ...) after one warm-up run, median of the
repetitions. For each choice: seconds (total of ``run``, and its network part), the ratio to
``"none"``, Dice ET / TC / WT against the phantom's ground truth, and the case's confidence
(:mod:`nslfcore.inference.confidence`).

The issue's budget: mirroring is on by default only if a case takes at most 1.2x the time of the
default model without it (``decision`` in the output).

    python benchmarks/mirroring_cost.py [--reps 3] [--model M] [--device cpu]

Writes ``benchmarks/results/mirroring_cost.json`` and prints a Markdown table.
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

from nslfcore.data.labels import REGIONS
from nslfcore.data.phantom import generate_case
from nslfcore.inference import MIRRORS, run
from nslfcore.metrics import overlap_metrics
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"
#: The issue's time budget for a default-on mirroring: time per case over the unmirrored default's.
BUDGET = 1.2


def region_dice(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per region (ET, TC, WT) of two internal label maps ``(z, y, x)`` (0-3) on one grid."""
    return {name: overlap_metrics(np.isin(labels, c), np.isin(truth, c))["dice"] for name, c in REGIONS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id or file (default: the shipped default model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each choice (interleaved)")
    parser.add_argument("--out", type=Path, default=RESULTS / "mirroring_cost.json")
    args = parser.parse_args()

    model, info = load_model(args.model, device="cpu")
    case = generate_case(seed=2000, index=1000)
    assert case.label is not None
    truth = np.asarray(case.label)
    options = dict(device=args.device, label_convention="brats2023")  # internal labels 0-3, as the truth
    run(case, model, mirror="none", **options)  # warm-up: thread pools, allocator
    totals: dict[str, list[float]] = {m: [] for m in MIRRORS}
    networks: dict[str, list[float]] = {m: [] for m in MIRRORS}
    outcome: dict[str, dict] = {}
    for rep in range(args.reps):
        for mirror in MIRRORS:
            start = time.perf_counter()
            result = run(case, model, mirror=mirror, **options)
            totals[mirror].append(time.perf_counter() - start)
            networks[mirror].append(result.timings["inference"])
            assert result.labels is not None and result.confidence is not None
            outcome[mirror] = {"dice": region_dice(result.labels, truth), "confidence": result.confidence.to_dict(),
                               "mode": result.mode, "precision": result.precision}  # fmt: skip
            print(f"rep {rep + 1}/{args.reps} {mirror}: {totals[mirror][-1]:.1f} s, Dice "
                  + ", ".join(f"{k} {v:.4f}" for k, v in outcome[mirror]["dice"].items()), flush=True)  # fmt: skip
    median = {m: statistics.median(t) for m, t in totals.items()}
    rows = {m: {"seconds_median": median[m], "seconds": totals[m], "network_seconds_median": statistics.median(networks[m]),
                "ratio_to_none": median[m] / median["none"], **outcome[m]} for m in MIRRORS}  # fmt: skip
    default_on = rows["lr"]["ratio_to_none"] <= BUDGET
    result = {
        "benchmark": "mirroring_cost", "date": time.strftime("%Y-%m-%d %H:%M"), "model": info.id,
        "case": "generate_case(seed=2000, index=1000)", "device": args.device, "reps": args.reps,
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows, "budget": BUDGET,
        "decision": (f"lr takes {rows['lr']['ratio_to_none']:.2f}x the time of none "
                     f"({'within' if default_on else 'beyond'} the {BUDGET}x budget): default "
                     f"{'lr' if default_on else 'none'}"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| mirror | passes | s per case (median) | network s | x none | Dice ET | Dice TC | Dice WT | agreement | entropy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mirror, row in rows.items():
        c = row["confidence"]
        agreement = "-" if c["agreement"] is None else f"{c['agreement']:.4f}"
        print(f"| {mirror} | {c['passes']} | {row['seconds_median']:.1f} | {row['network_seconds_median']:.1f} | "
              f"{row['ratio_to_none']:.2f} | {row['dice']['ET']:.4f} | {row['dice']['TC']:.4f} | {row['dice']['WT']:.4f} | "
              f"{agreement} | {c['mean_entropy']:.4f} |")  # fmt: skip
    print(result["decision"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
