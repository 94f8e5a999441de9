"""Issue 31's targets for a candidate default model against the current one, on labelled held-out folders.

For each model and each case of each ``--data`` folder (BraTS layouts; held-out phantoms from
``nslf phantom --seed 2000 --start 1000`` and held-out synthesised cases from ``nslf synth --seed
2000 --start 1000``, neither used in training):

* Dice ET / TC / WT with all four sequences (:func:`nslfcore.evaluation.score_case`, MONAI HD95);
* the fused volume's 3-D SSIM and PSNR against the sources, and its lesion conspicuity (whole-tumour
  CNR against normal-appearing white matter, divided by the best single sequence's;
  :mod:`nslfcore.metrics.conspicuity`), beside the plain mean of the four normalised sequences;
* seconds per case (``nslfcore.inference.run``'s total, fp32, the automatic mode);
* on the first ``--missing-cases`` cases of each folder, Dice with each sequence missing in turn.

    python benchmarks/default_model_check.py --models nslf-phantom-fast-v4 runs/v5/model.pt \\
        --data data/phantom-test data/synth-test --out benchmarks/results/default_model_check.json

Writes the JSON (per case rows and means per model and folder) and prints Markdown tables.
Interleaves the models case by case, so that the timing of both sees the same machine load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

from nslfcore import MODALITIES
from nslfcore.data.brats import load_case
from nslfcore.data.discovery import find_cases
from nslfcore.evaluation import score_case
from nslfcore.fusion_baselines import ClassicalFusion
from nslfcore.inference import run
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"
REGIONS = ("ET", "TC", "WT")
FUSION = ("ssim", "psnr", "cnr_ratio")


def _scores(case, model) -> tuple[dict, float]:
    start = time.perf_counter()
    result = run(case, model, device="cpu", precision="fp32")
    seconds = time.perf_counter() - start
    return score_case(case, result.fused, result.labels), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="model ids or files; the first is the reference")
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="labelled held-out case folders")
    parser.add_argument("--missing-cases", type=int, default=3, help="cases per folder scored with each sequence missing")
    parser.add_argument("--limit", type=int, default=None, help="first N cases of each folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "default_model_check.json")
    args = parser.parse_args()
    models = {name: load_model(name, device="cpu") for name in args.models}
    mean_fusion = ClassicalFusion("mean")
    rows: list[dict] = []
    for folder in args.data:
        for number, files in enumerate(find_cases(folder)[: args.limit]):
            case = load_case(files)
            baseline = run(case, mean_fusion, segment=False, device="cpu")
            mean_row = score_case(case, baseline.fused, None)
            for name, (model, info) in models.items():
                scored, seconds = _scores(case, model)
                row = {"folder": folder.name, "case": case.name, "model": info.id if info else name, "seconds": seconds,
                       "dice": {r: scored[f"{r}_dice"] for r in REGIONS},
                       "fusion": {k: scored[k] for k in FUSION}, "plain_mean": {k: mean_row[k] for k in FUSION}}  # fmt: skip
                if number < args.missing_cases:
                    row["missing_dice"] = {}
                    for missing in MODALITIES:
                        images = {m: a for m, a in case.images.items() if m != missing}
                        three = score_case(case, None, run(dataclasses.replace(case, images=images), model, fuse=False,
                                                           device="cpu", precision="fp32").labels)  # fmt: skip
                        row["missing_dice"][missing] = {r: three[f"{r}_dice"] for r in REGIONS}
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("folder", "case", "model", "dice", "fusion")}), flush=True)
    summary = _summary(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "default_model_check", "date": time.strftime("%Y-%m-%d %H:%M"),
                                    "machine": "2-core CPU, torch CPU fp32", "summary": summary, "rows": rows},
                                   indent=2) + "\n")  # fmt: skip
    _print(summary)
    print(f"wrote {args.out}")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return round(statistics.fmean(finite), 4) if finite else float("nan")


def _summary(rows: list[dict]) -> dict:
    out: dict = {}
    for key in sorted({(r["folder"], r["model"]) for r in rows}):
        picked = [r for r in rows if (r["folder"], r["model"]) == key]
        entry = {"cases": len(picked), "seconds": round(statistics.median(r["seconds"] for r in picked), 2),
                 "dice": {g: _mean([r["dice"][g] for r in picked]) for g in REGIONS},
                 "fusion": {k: _mean([r["fusion"][k] for r in picked]) for k in FUSION},
                 "plain_mean": {k: _mean([r["plain_mean"][k] for r in picked]) for k in FUSION},
                 "min_cnr_ratio": min((r["fusion"]["cnr_ratio"] for r in picked), default=float("nan"))}  # fmt: skip
        with_missing = [r for r in picked if "missing_dice" in r]
        if with_missing:
            entry["missing_dice"] = {m: {g: _mean([r["missing_dice"][m][g] for r in with_missing]) for g in REGIONS}
                                     for m in MODALITIES}  # fmt: skip
            entry["all_four_on_those"] = {g: _mean([r["dice"][g] for r in with_missing]) for g in REGIONS}
        out[f"{key[0]} | {key[1]}"] = entry
    return out


def _print(summary: dict) -> None:
    print("\n| folder / model | cases | ET | TC | WT | SSIM | PSNR | CNR ratio (min) | mean's SSIM / PSNR / CNR | s per case |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, e in summary.items():
        d, f, p = e["dice"], e["fusion"], e["plain_mean"]
        print(f"| {key} | {e['cases']} | {d['ET']:.3f} | {d['TC']:.3f} | {d['WT']:.3f} | {f['ssim']:.3f} | {f['psnr']:.2f} | "
              f"{f['cnr_ratio']:.2f} ({e['min_cnr_ratio']:.2f}) | {p['ssim']:.3f} / {p['psnr']:.2f} / {p['cnr_ratio']:.2f} | "
              f"{e['seconds']:.1f} |")  # fmt: skip
    print("\n| folder / model | WT all four | WT without t1 | t1ce | t2 | flair |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for key, e in summary.items():
        if "missing_dice" in e:
            m = e["missing_dice"]
            print(f"| {key} | {e['all_four_on_those']['WT']:.3f} | " + " | ".join(f"{m[s]['WT']:.3f}" for s in MODALITIES) + " |")


if __name__ == "__main__":
    main()
