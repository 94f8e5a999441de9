"""Lesion conspicuity of the shipped model's fused volume against the plain mean (issue 31 point 5).

For each held-out realistic phantom (``make_phantom(seed=2000, index=1000 + i)``, ``i < --n``): the
default model's fused volume (:func:`nslfcore.inference.run`, fusion only, this CPU, fp32) and the
plain mean of the four normalised sources, both scored as :func:`nslfcore.evaluation.score_case`
scores fusion -- inside the brain box against the sources of
:func:`nslfcore.data.transforms.preprocess_case`:

* the whole tumour's contrast-to-noise ratio against normal-appearing white matter, fused over the
  best source (:func:`nslfcore.metrics.conspicuity_ratio`), with the phantom's true NAWM (white
  matter fraction > 0.5, farther than 5 mm from the whole tumour) and with the NAWM that scoring
  estimates from T1 (:func:`nslfcore.metrics.normal_white_matter`);
* 3-D SSIM and PSNR against the sources, averaged over them (:func:`nslfcore.metrics.fusion_metrics`;
  NMI and SFR come along).

Targets: CNR ratio >= 0.8 on every case; SSIM and PSNR at least the plain mean's.

    python benchmarks/fusion_conspicuity.py [--n 5] [--model FILE]

Writes ``benchmarks/results/fusion_conspicuity.json`` and ``fusion_conspicuity.md`` (a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.phantom import make_phantom
from nslfcore.data.transforms import brain_mask, preprocess_case
from nslfcore.inference import run
from nslfcore.metrics import conspicuity_ratio, fusion_metrics, normal_white_matter
from nslfcore.metrics.conspicuity import NAWM_MARGIN_MM, dilate_mm
from nslfcore.model_store import load_model

RESULTS = Path(__file__).parent / "results"
SEED, FIRST_INDEX = 2000, 1000  # the held-out phantoms
TARGET_RATIO = 0.8


def score(fused_box: np.ndarray, sources: np.ndarray, wt: np.ndarray, nawm: dict[str, np.ndarray]) -> dict:
    """CNR ratios (per NAWM variant) and the fusion metrics of one fused volume in the brain box ``(z, y, x)``."""
    metrics = fusion_metrics(fused_box, sources)
    row: dict = {k: float(metrics[k]) for k in ("ssim", "psnr", "nmi", "sfr")}
    for name, mask in nawm.items():
        c = conspicuity_ratio(fused_box, sources, wt, mask)
        row[f"cnr_{name}"] = {"ratio": c["ratio"], "fused": c["cnr_fused"], "best": c["cnr_best"],
                              "best_source": MODALITIES[c["best_source"]], "sources": c["cnr_sources"]}  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="held-out phantom cases (5)")
    parser.add_argument("--model", default=None, help="NSLF model id or file (default: the shipped model)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fusion_conspicuity.json")
    args = parser.parse_args()

    model, info = load_model(args.model, device="cpu")
    rows = []
    for i in range(args.n):
        phantom = make_phantom(seed=SEED, index=FIRST_INDEX + i)
        case = phantom.case
        fused = run(case, model, segment=False, device="cpu", precision="fp32").fused
        assert fused is not None
        prepared = preprocess_case(case)
        crop = prepared.record.crop
        brain = brain_mask(case.stacked())
        wt = case.label > 0
        true_nawm = (phantom.tissues["wm"] > 0.5) & brain & ~dilate_mm(wt, NAWM_MARGIN_MM, case.geometry.spacing)
        estimated = normal_white_matter(prepared.image[MODALITIES.index("t1")], crop(brain), crop(wt),
                                        spacing=case.geometry.spacing)  # fmt: skip
        nawm = {"true_nawm": crop(true_nawm), "estimated_nawm": estimated}
        row = {"case": case.name, "index": FIRST_INDEX + i, "wt_voxels": int(wt.sum()),
               "nawm_voxels": {k: int(v.sum()) for k, v in nawm.items()}}  # fmt: skip
        row["model"] = score(crop(fused), prepared.image, crop(wt), nawm)
        row["mean"] = score(prepared.image.mean(axis=0), prepared.image, crop(wt), nawm)
        rows.append(row)
        print(case.name, json.dumps({k: row[k] for k in ("model", "mean")}), flush=True)

    def mean_of(method: str, key: str) -> float:
        values = [r[method][key]["ratio"] if key.startswith("cnr_") else r[method][key] for r in rows]
        return statistics.fmean(values)

    keys = ("cnr_true_nawm", "cnr_estimated_nawm", "ssim", "psnr", "nmi", "sfr")
    summary = {m: {k: mean_of(m, k) for k in keys} for m in ("model", "mean")}
    targets = {
        "ratio_at_least_0.8_every_case": all(r["model"]["cnr_true_nawm"]["ratio"] >= TARGET_RATIO for r in rows),
        "ssim_at_least_mean": summary["model"]["ssim"] >= summary["mean"]["ssim"],
        "psnr_at_least_mean": summary["model"]["psnr"] >= summary["mean"]["psnr"],
    }
    result = {"benchmark": "fusion_conspicuity", "date": time.strftime("%Y-%m-%d %H:%M"), "model": info.id,
              "device": "cpu", "precision": "fp32", "seed": SEED, "cases": len(rows), "nawm_margin_mm": NAWM_MARGIN_MM,
              "targets": targets, "summary": summary, "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    lines = [f"# Fusion conspicuity ({info.id}, {len(rows)} held-out phantoms, seed {SEED}, CPU fp32)", "",
             "CNR ratio: the whole tumour's CNR against NAWM in the fused volume over the best source's (true NAWM; "
             "estimated from T1 in brackets). SSIM, PSNR (dB): against the four sources, averaged.", "",
             "| case | best source | CNR ratio model | CNR ratio mean | SSIM model | SSIM mean | PSNR model | PSNR mean |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        m, p = r["model"], r["mean"]
        lines.append(f"| {r['case']} | {m['cnr_true_nawm']['best_source']} | {m['cnr_true_nawm']['ratio']:.3f} "
                     f"({m['cnr_estimated_nawm']['ratio']:.3f}) | {p['cnr_true_nawm']['ratio']:.3f} "
                     f"({p['cnr_estimated_nawm']['ratio']:.3f}) | {m['ssim']:.4f} | {p['ssim']:.4f} | "
                     f"{m['psnr']:.2f} | {p['psnr']:.2f} |")  # fmt: skip
    s, p = summary["model"], summary["mean"]
    lines.append(f"| mean | | {s['cnr_true_nawm']:.3f} ({s['cnr_estimated_nawm']:.3f}) | {p['cnr_true_nawm']:.3f} "
                 f"({p['cnr_estimated_nawm']:.3f}) | {s['ssim']:.4f} | {p['ssim']:.4f} | {s['psnr']:.2f} | "
                 f"{p['psnr']:.2f} |")  # fmt: skip
    lines += ["", "Targets: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in targets.items()), ""]
    markdown = "\n".join(lines)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
