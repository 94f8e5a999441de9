"""``nslf evaluate``: a CSV row per case and the paper's summary table; metrics consistent with the label maps."""

from __future__ import annotations

import csv

import numpy as np

from nslfcore.cli import main as nslf
from nslfcore.data.phantom import write_phantom_dataset


def test_evaluate_writes_per_case_csv_and_summary(random_model_file, tmp_path, capsys):
    data = tmp_path / "data"
    write_phantom_dataset(data, 2, seed=9, tiny=True)
    model_path = random_model_file
    out = tmp_path / "eval"
    assert nslf(["evaluate", "--data", str(data), "--model", str(model_path), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["BraTS2021_00000", "BraTS2021_00001"]
    for row in rows:
        assert 0 < float(row["ssim"]) <= 1 and float(row["psnr"]) > 0 and float(row["nmi"]) >= 1
        for region in ("ET", "TC", "WT"):
            assert 0 <= float(row[f"{region}_dice"]) <= 1 and float(row[f"{region}_hd95"]) >= 0
            assert float(row[f"{region}_specificity_brain"]) <= float(row[f"{region}_specificity"]) + 1e-9
    summary = (out / "summary.md").read_text()
    assert "| SSIM | PSNR (dB) | NMI | SFR |" in summary and "| WT |" in summary and "| mean |" in summary
    mean_wt = np.mean([float(r["WT_dice"]) for r in rows])
    assert f"{mean_wt:.4f}" in summary
    assert nslf(["evaluate", "--data", str(tmp_path / "none"), "--model", str(model_path), "--out", str(out)]) == 1
