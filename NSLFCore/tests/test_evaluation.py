"""``nslf evaluate``: a CSV row per case and the paper's summary table; metrics consistent with the label maps."""

from __future__ import annotations

import csv

import numpy as np
import pytest

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


def test_evaluate_window_reaches_both_models_and_is_named(random_model_file, tmp_path, capsys):
    import torch

    from nslfcore.data.brats import find_cases
    from nslfcore.evaluation import evaluate_case
    from nslfcore.model_store import save_model
    from nslfcore.segmentation_baselines import build_baseline

    data = tmp_path / "data"
    write_phantom_dataset(data, 1, seed=9, tiny=True)
    torch.manual_seed(0)
    network = build_baseline("segresnet", features=(8,)).eval()  # group norm: the window changes its output
    baseline = save_model(network, tmp_path / "segresnet.pt")
    out = tmp_path / "eval"
    assert nslf(["evaluate", "--data", str(data), "--model", str(random_model_file), "--baseline", str(baseline),
                 "--out", str(out), "--window", "16", "32", "32"]) == 0  # fmt: skip
    assert "sliding window 16 x 32 x 32 (z, y, x)" in (out / "summary.md").read_text()
    (row,) = csv.DictReader((out / "metrics_baseline.csv").open())
    files = find_cases(data)[0]
    columns = [f"{r}_{m}" for r in ("ET", "TC", "WT") for m in ("dice", "specificity")]
    expected = evaluate_case(files, network, "cpu", window=(16, 32, 32))
    assert [float(row[k]) for k in columns] == pytest.approx([float(expected[k]) for k in columns], abs=1e-6)
    whole = evaluate_case(files, network, "cpu")
    assert any(abs(float(whole[k]) - float(expected[k])) > 1e-4 for k in columns)
    capsys.readouterr()
    assert nslf(["evaluate", "--data", str(data), "--model", str(random_model_file), "--out", str(tmp_path / "bad"),
                 "--window", "16", "0", "32"]) == 1  # fmt: skip
    assert "three positive sizes" in capsys.readouterr().err and not (tmp_path / "bad" / "metrics.csv").exists()
