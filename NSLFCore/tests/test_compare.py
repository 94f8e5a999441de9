"""``nslf compare`` (nslfcore.compare): every method through the same metrics, resumable, tables and figures."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import nslfcore.evaluation as evaluation_module
import nslfcore.inference as inference_module
from nslfcore.cli import main
from nslfcore.compare import compare, read_rows, tables_markdown
from nslfcore.comparison_figures import CLASS_COLOURS, healthy_slice, label_overlay, tumour_slice
from nslfcore.data.labels import ED, ET, NCR
from nslfcore.data.phantom import write_phantom_dataset


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-cases")
    write_phantom_dataset(folder, 2, seed=3, tiny=True, size=(32, 40, 40))
    return folder


@pytest.fixture
def calls(monkeypatch):
    """Counts the inferences of each method on each case, for the scores and the figures: every call of
    the pipeline's ``run``, bound or imported later (the real one is called through)."""
    seen: list[tuple[str, str]] = []
    real = inference_module.run

    def counting(case, network, *args, **kwargs):
        seen.append((type(network).__name__, case.name))
        return real(case, network, *args, **kwargs)

    monkeypatch.setattr(evaluation_module, "infer", counting)
    monkeypatch.setattr(inference_module, "run", counting)
    return seen


def test_tables_hold_every_method_with_the_same_metrics(cases, tmp_path, random_model_file, calls):
    methods = [str(random_model_file), "classical:mean", "classical:max"]
    written = compare(cases, tmp_path / "out", methods, device="cpu", hd95_definition="pooled")
    assert len(calls) == 6  # 3 methods x 2 cases; the figures reuse case 0's outputs instead of inferring again
    rows = {name: read_rows(tmp_path / "out" / "cases" / f"{name}.csv") for name in ("random-model", "mean", "max")}
    assert all([r["case"] for r in v] == ["BraTS2021_00000", "BraTS2021_00001"] for v in rows.values())
    assert "ET_hd95_pooled" in rows["random-model"][0] and "ET_dice" not in rows["mean"][0]
    assert all(math.isfinite(float(r["ssim"])) for v in rows.values() for r in v)
    tables = written["tables"].read_text()
    fusion = tables.split("## Fusion (3-D")[1].split("##")[0]
    assert all(f"| {name} |" in fusion for name in rows)
    segmentation = tables.split("## Segmentation")[1]
    assert "| random-model |" in segmentation and "| mean |" not in segmentation and "HD95 (pooled)" in segmentation
    # the tables are the per-case rows' means
    ssim = sum(float(r["ssim"]) for r in rows["max"]) / 2
    assert f"| max | {ssim:.4f} ±" in fusion
    for key in ("fused_slices", "dice_boxplot", "segmentation_slices"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[key].stat().st_size > 5000
    # a rerun resumes every row; the two figures then infer case 0 once per method, not once per figure
    figures = {key: written[key].read_bytes() for key in ("fused_slices", "segmentation_slices")}
    calls.clear()
    again = compare(cases, tmp_path / "out", methods, device="cpu", hd95_definition="pooled")
    assert sorted(calls) == sorted([("NSLF", "BraTS2021_00000")] + [("ClassicalFusion", "BraTS2021_00000")] * 2)
    assert all(again[key].read_bytes() == image for key, image in figures.items())


def test_segmentation_figure_slices_and_colours():
    brain = np.zeros((6, 4, 4), bool)
    brain[1:5, 1:3, 1:3] = True
    brain[3, :, :] = True  # the largest brain slice ...
    label = np.zeros((6, 4, 4), np.uint8)
    label[3, 1, 1] = ED  # ... holds tumour, so the healthy slice is another
    label[2, 1:3, 1:3] = NCR
    assert tumour_slice(label, brain) == 2 and healthy_slice(label, brain) in (1, 4)
    assert healthy_slice(np.ones((6, 4, 4), np.uint8), brain) is None
    background = np.full((2, 2), 0.5, np.float32)
    rgb = label_overlay(background, np.array([[0, ET], [NCR, ED]]), alpha=1.0)
    assert np.allclose(rgb[0, 0], 0.5) and np.allclose(rgb[0, 1], np.array(CLASS_COLOURS[ET]) / 255.0)
    assert np.allclose(rgb[1, 0], np.array(CLASS_COLOURS[NCR]) / 255.0)
    half = label_overlay(background[:1, :1], np.array([[ED]]), alpha=0.5)[0, 0]
    assert np.allclose(half, 0.25 + 0.5 * np.array(CLASS_COLOURS[ED]) / 255.0)


def test_an_interrupted_comparison_resumes_with_the_missing_cases_only(cases, tmp_path, calls):
    out = tmp_path / "out"
    compare(cases, out, ["classical:mean", "classical:pca"], device="cpu", figures=False)
    first = (out / "cases" / "pca.csv").read_text()
    with (out / "cases" / "pca.csv").open() as handle:  # as if stopped after the first case of pca
        kept = list(csv.reader(handle))[:2]
    with (out / "cases" / "pca.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    calls.clear()
    compare(cases, out, ["classical:mean", "classical:pca"], device="cpu", figures=False)
    assert calls == [("ClassicalFusion", "BraTS2021_00001")]
    assert (out / "cases" / "pca.csv").read_text() == first
    with pytest.raises(ValueError, match="other settings"):
        compare(cases, out, ["classical:mean"], device="cpu", hd95_definition="max", figures=False)


def test_unknown_method_fails_before_any_case_runs(cases, tmp_path, calls):
    with pytest.raises(ValueError, match="nope"):
        compare(cases, tmp_path / "out", ["classical:mean", "classical:nope"], device="cpu", figures=False)
    assert calls == [] and not (tmp_path / "out").exists()


def test_tables_of_a_fusion_only_comparison_have_no_segmentation_section():
    rows = {"mean": [{"case": "a", "ssim": 0.5, "psnr": 20.0, "nmi": 1.1, "sfr": 0.4}]}
    text = tables_markdown(rows, "data", "pooled")
    assert "| mean | 0.5000 ± 0.0000 | 20.0000 ± 0.0000 |" in text and "## Segmentation" not in text


def test_command_line(cases, tmp_path, capsys):
    assert main(["compare", "--data", str(cases), "--out", str(tmp_path / "out"), "--methods", "classical:mean",
                 "--no-figures", "--device", "cpu"]) == 0  # fmt: skip
    assert "tables.md" in capsys.readouterr().out
    assert main(["compare", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 1


def test_a_sliding_window_reaches_every_inference_and_is_part_of_the_settings(cases, tmp_path):
    import json

    import torch

    from nslfcore.data.brats import find_cases, load_case
    from nslfcore.evaluation import evaluate_case, score_case
    from nslfcore.inference import run
    from nslfcore.model_store import save_model
    from nslfcore.segmentation_baselines import build_baseline

    torch.manual_seed(0)
    network = build_baseline("segresnet", features=(8,)).eval()  # group norm: its output depends on the window's extent
    model = save_model(network, tmp_path / "segresnet.pt")
    window = (16, 32, 32)
    written = compare(cases, tmp_path / "sliding", [str(model)], device="cpu", window=window, limit=1)
    assert json.loads((tmp_path / "sliding" / "settings.json").read_text())["window"] == list(window)
    rows = read_rows(written["cases/segresnet"])
    first = find_cases(cases)[0]
    case = load_case(first, require_label=True)
    direct = run(case, network, fuse=False, segment=True, device="cpu", mode="sliding", roi=window, label_convention="brats2021")
    expected = score_case(case, None, direct.labels, "pooled")
    columns = [f"{r}_{m}" for r in ("ET", "TC", "WT") for m in ("dice", "specificity")]
    assert [rows[0][k] for k in columns] == pytest.approx([expected[k] for k in columns], abs=1e-6)
    whole = evaluate_case(first, network, "cpu", "pooled")
    assert any(abs(float(whole[k]) - float(expected[k])) > 1e-4 for k in columns)  # the window changed the result
    # a window as large as the grid is one window: the whole-volume result
    assert [evaluate_case(first, network, "cpu", "pooled", window=(64, 64, 64))[k] for k in columns] == \
        pytest.approx([whole[k] for k in columns], abs=1e-6)  # fmt: skip
    assert written["segmentation_slices"].stat().st_size > 5000
    with pytest.raises(ValueError, match="other settings"):  # the same folder without the window: refused
        compare(cases, tmp_path / "sliding", [str(model)], device="cpu", figures=False, limit=1)
    with pytest.raises(ValueError, match="three positive sizes"):
        compare(cases, tmp_path / "bad", [str(model)], device="cpu", window=(16, 0, 16))
    assert main(["compare", "--data", str(cases), "--out", str(tmp_path / "cli"), "--methods", str(model), "--no-figures",
                 "--device", "cpu", "--limit", "1", "--window", "16", "32", "32"]) == 0  # fmt: skip
    assert [[r[k] for k in columns] for r in read_rows(tmp_path / "cli" / "cases" / "segresnet.csv")] == \
        [[r[k] for k in columns] for r in rows]  # fmt: skip
