"""The plain 3-D U-Net baseline: training, safe loading, segmentation-only inference, evaluation and scoring."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nslfcore.baseline import BaselineUNet, load_baseline
from nslfcore.cli import main as nslf
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.io import write_image
from nslfcore.data.labels import from_internal
from nslfcore.data.phantom import write_phantom_dataset
from nslfcore.inference import run
from nslfcore.model_store import load_model, save_model
from nslfcore.models import Network


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baseline") / "data"
    write_phantom_dataset(folder, 3, seed=21, tiny=True, size=(32, 32, 32))
    return folder


def test_training_writes_a_weights_only_checkpoint_and_a_log(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert nslf(["baseline", "--data", str(data), "--out", str(out), "--epochs", "2", "--crop", "32", "32", "32"]) == 0
    log = [json.loads(line) for line in (out / "baseline_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["dice_wt"] <= 1 for r in log)
    data_dict = torch.load(out / "baseline_best.pt", weights_only=True)
    assert data_dict["kind"] == "baseline" and data_dict["features"] == [16, 32, 64, 128, 128, 16]
    model = load_baseline(out / "baseline_best.pt")
    assert not model.training and isinstance(model, BaselineUNet)
    loaded, info = load_model(out / "baseline_best.pt")  # the one loader of model files
    assert isinstance(loaded, BaselineUNet) and info.epoch == data_dict["epoch"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert nslf(["baseline", "--data", str(data), "--out", str(out)]) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err
    before = (out / "baseline_best.pt").read_bytes()
    resume = ["baseline", "--data", str(data), "--out", str(out), "--crop", "32", "32", "32", "--resume"]
    assert nslf([*resume, "--epochs", "2"]) == 0  # finished: nothing to do, nothing rewritten
    assert (out / "baseline_best.pt").read_bytes() == before and len((out / "baseline_log.jsonl").read_text().splitlines()) == 2
    assert nslf([*resume, "--epochs", "3"]) == 1 and "another baseline run" in capsys.readouterr().err


def test_training_with_nslf_stage3_recipe(data, tmp_path):
    """``recipe``: the default model's stage-3 options (batches, crops per case, ET crops, strong
    augmentation, per-class Dice) and its time limit, which ends training after the first epoch here."""
    from nslfcore.baseline import train_baseline
    from nslfcore.training.options import TrainingOptions

    recipe = TrainingOptions(stages=(3,), epochs=3, lr=1e-3, batch_size=2, segmentation_crop=(32, 32, 32),
                             samples_per_case=2, et_fraction=0.4, tumour_fraction=0.9, augmentation="strong",
                             dice_average="class", time_limit_s=1e-6)  # fmt: skip
    lines: list[str] = []
    best = train_baseline(data, tmp_path / "run", arch="segresnet", recipe=recipe, device="cpu", log=lines.append)
    log = [json.loads(line) for line in (tmp_path / "run" / "baseline_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and "time limit" in lines[-1]
    model, info = load_model(best)
    assert info.epoch == 1 and type(model).__name__ != "BaselineUNet"


def test_an_nslf_file_is_not_a_baseline(random_model_file):
    with pytest.raises(ValueError, match="not a segmentation baseline"):
        load_baseline(random_model_file)


def test_the_baseline_is_a_segmentation_only_network(tmp_path):
    model = BaselineUNet()
    assert isinstance(model, Network) and (model.fuses, model.segments, model.sequential) == (False, True, False)
    path = save_model(model, tmp_path / "b.pt", epoch=3)
    assert torch.load(path, weights_only=True)["architecture"] == "BasicUNet"
    assert load_baseline(path).features == model.features


def test_segmentation_only_inference_on_the_input_grid(data):
    case = load_case(find_cases(data)[0])
    model = BaselineUNet().eval()
    result = run(case, model, fuse=False, device="cpu", mode="sliding", roi=(16, 16, 16), probabilities=True)
    assert result.fused is None and result.labels.shape == case.geometry.shape
    assert set(np.unique(result.labels)) <= {0, 1, 2, 4}
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot fuse"):
        run(case, model, device="cpu")


def test_evaluate_adds_the_baseline_rows(data, random_model_file, tmp_path):
    baseline_path = save_model(BaselineUNet(), tmp_path / "b.pt")
    out = tmp_path / "eval"
    args = ["evaluate", "--data", str(data), "--model", str(random_model_file), "--baseline", str(baseline_path),
            "--out", str(out)]  # fmt: skip
    assert nslf(args + ["--limit", "2"]) == 0
    rows = list(csv.DictReader((out / "metrics_baseline.csv").open()))
    assert len(rows) == 2 and all(r["ssim"] == "nan" for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| method | region |" in summary
    assert summary.count("| NSLF |") == 4 and summary.count("| U-Net baseline |") == 4
    mean_wt = np.mean([float(r["WT_dice"]) for r in rows])
    assert f"| U-Net baseline | WT | {mean_wt:.4f}" in summary


def test_score_of_the_reference_itself_is_perfect_and_grids_are_checked(data, tmp_path, capsys):
    files = find_cases(data)[0]
    case = load_case(files, require_label=True)
    truth = write_image(from_internal(case.label, "brats2021"), case.geometry, tmp_path / "truth.nii.gz", np.uint8)
    out_json = tmp_path / "scores.json"
    assert nslf(["score", "--case", str(data / files.name), "--labels", str(truth), "--json", str(out_json)]) == 0
    row = json.loads(out_json.read_text())
    for region in ("ET", "TC", "WT"):
        assert row[f"{region}_dice"] == pytest.approx(1.0) and row[f"{region}_hd95"] == pytest.approx(0.0)
    assert "WT" in capsys.readouterr().out
    shifted = write_image(np.zeros((4, 4, 4), np.uint8), case.geometry.cropped((0, 0, 0), (4, 4, 4)), tmp_path / "s.nii.gz")
    assert nslf(["score", "--case", str(data / files.name), "--labels", str(shifted)]) == 1
    assert "not on the grid" in capsys.readouterr().err


class _Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_after_its_last_epoch_and_matches_an_uninterrupted_one(data, tmp_path):
    """``resume``: the state after each epoch (``baseline_last.pt``, weights-only) carries on where a
    run stopped; the seeded per-epoch data make the resumed run the same as one that never stopped."""
    from nslfcore.baseline import LAST_FILE, train_baseline
    from nslfcore.training.options import TrainingOptions

    recipe = TrainingOptions(stages=(3,), epochs=3, lr=1e-3, batch_size=2, segmentation_crop=(32, 32, 32),
                             samples_per_case=2, augmentation="strong", num_workers=0)  # fmt: skip
    whole = train_baseline(data, tmp_path / "whole", recipe=recipe, device="cpu", log=lambda line: None)

    def stop_after_first_epoch(line: str) -> None:
        if "epoch 1/3" in line:
            raise _Interrupted

    cut = tmp_path / "cut"
    with pytest.raises(_Interrupted):
        train_baseline(data, cut, recipe=recipe, device="cpu", log=stop_after_first_epoch)
    assert torch.load(cut / LAST_FILE, weights_only=True)["epoch"] == 1
    lines: list[str] = []
    resumed = train_baseline(data, cut, recipe=recipe, device="cpu", log=lines.append, resume=True)
    assert "resuming after epoch 1/3" in lines[0] and sum("baseline epoch" in line for line in lines) == 2

    logs = [[json.loads(line) for line in (run / "baseline_log.jsonl").read_text().splitlines()]
            for run in (tmp_path / "whole", cut)]  # fmt: skip
    assert [r["epoch"] for r in logs[1]] == [1, 2, 3]
    for mine, theirs in zip(*logs):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    a, b = load_baseline(whole).state_dict(), load_baseline(resumed).state_dict()
    assert all(torch.allclose(a[key].float(), b[key].float(), rtol=1e-3, atol=1e-5) for key in a)

    # A finished run returns at once; another architecture or recipe is refused, nothing overwritten.
    lines.clear()
    assert train_baseline(data, cut, recipe=recipe, device="cpu", log=lines.append, resume=True) == resumed
    assert not any("baseline epoch" in line for line in lines)
    before = (cut / "baseline_best.pt").read_bytes()
    with pytest.raises(ValueError, match="another baseline run"):
        train_baseline(data, cut, arch="segresnet", recipe=recipe, device="cpu", log=lines.append, resume=True)
    assert (cut / "baseline_best.pt").read_bytes() == before
    assert len((cut / "baseline_log.jsonl").read_text().splitlines()) == 3
