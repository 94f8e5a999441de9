"""What a missing sequence costs (issue 31 point 2): the shipped model's Dice with all four, and with each missing.

On held-out realistic phantom cases (``generate_case(seed=2000, index=1000 + i)``: MNI152 anatomy,
synthetic tumour; seed 2000 is used by no training run), the model segments each case with all four
sequences and then with each one left out in turn (:func:`nslfcore.inference.run` on a
:class:`~nslfcore.data.case.Case` of three images: the missing one becomes a zero channel and gets
fusion weight 0). Dice per region (ET, TC, WT; :func:`nslfcore.metrics.overlap_metrics`, as
:mod:`nslfcore.evaluation` scores) against the phantom's labels; fp32 on this CPU, the automatic mode.

    python benchmarks/missing_sequence.py [--cases 5] [--model ID_OR_FILE] [--out benchmarks/results/missing_sequence.json]

Writes the JSON (per case and mean Dice per input, and ``cost``: mean Dice with all four minus mean
Dice with the sequence missing, per region) and prints a Markdown table and the ``cost`` as the
Python literal :data:`nslfcore.inference.missing.MISSING_SEQUENCE_COST` holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.labels import REGIONS, to_internal
from nslfcore.data.phantom import generate_case
from nslfcore.inference import run
from nslfcore.metrics import overlap_metrics
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"
SEED, FIRST_INDEX = 2000, 1000
ORDER = ("WT", "TC", "ET")


def dice_per_region(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice WT / TC / ET of a predicted BraTS 2021 label map ``(z, y, x)`` against internal reference labels."""
    internal = to_internal(predicted, "brats2021")
    return {name: float(overlap_metrics(np.isin(internal, REGIONS[name]), np.isin(reference, REGIONS[name]))["dice"])
            for name in ORDER}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--model", default=None, help="model id or file (default: the shipped default model)")
    parser.add_argument("--out", type=Path, default=RESULTS / "missing_sequence.json")
    args = parser.parse_args()

    model, info = load_model(args.model, device="cpu")
    inputs = ("all", *MODALITIES)
    rows = []
    for i in range(args.cases):
        case = generate_case(seed=SEED, index=FIRST_INDEX + i)
        assert case.label is not None
        row: dict = {"case": case.name, "index": FIRST_INDEX + i, "dice": {}, "seconds": {}}
        for missing in inputs:
            images = {m: a for m, a in case.images.items() if m != missing}
            start = time.perf_counter()
            result = run(dataclasses.replace(case, images=images), model, device="cpu", precision="fp32")
            row["seconds"][missing] = round(time.perf_counter() - start, 2)
            assert result.labels is not None and result.missing == (None if missing == "all" else missing)
            row["dice"][missing] = dice_per_region(result.labels, case.label)
        rows.append(row)
        print(case.name, json.dumps(row["dice"]), flush=True)

    mean = {k: {r: statistics.fmean(row["dice"][k][r] for row in rows) for r in ORDER} for k in inputs}
    cost = {m: {r: round(mean["all"][r] - mean[m][r], 3) for r in ORDER} for m in MODALITIES}
    result = {"benchmark": "missing_sequence", "date": time.strftime("%Y-%m-%d %H:%M"), "model": info.id,
              "cases": len(rows), "seed": SEED, "indices": [r["index"] for r in rows], "precision": "fp32",
              "mean_dice": mean, "cost": cost, "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nmodel {info.id}, {len(rows)} held-out phantom cases (seed {SEED})\n")
    print("| input | Dice WT | TC | ET | drop WT | TC | ET |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in inputs:
        d = mean[k]
        drop = " | ".join(f"{mean['all'][r] - d[r]:.3f}" for r in ORDER)
        print(f"| {'all four' if k == 'all' else k + ' missing'} | {d['WT']:.3f} | {d['TC']:.3f} | {d['ET']:.3f} | {drop} |")
    print("\nMISSING_SEQUENCE_COST = " + json.dumps(cost))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
