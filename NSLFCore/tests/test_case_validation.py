"""Whole-case validation: Dice per region of the engine's whole-case pass, and stage 3 selecting on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from nslfcore.cli import main as nslf_main
from nslfcore.config import PRESETS
from nslfcore.data.dataset import BratsCropDataset
from nslfcore.data.phantom import generate_tiny_case, write_phantom_dataset
from nslfcore.data.transforms import PreprocessedCase
from nslfcore.distributed import DistributedContext
from nslfcore.models import NSLF
from nslfcore.training.case_validation import case_dice, case_validation, predict_labels, whole_case_dice
from nslfcore.training.checkpoint import load_checkpoint
from nslfcore.training.options import TrainingOptions
from nslfcore.training.progress import StageProgress
from nslfcore.training.stages import stage_for

CPU = torch.device("cpu")
SMALL = ["--fusion-crop", "32", "32", "32", "--segmentation-crop", "32", "48", "48", "--deterministic"]


class ClassByIntensity(torch.nn.Module):
    """A segment-only ``Network`` whose logits follow its input: edema where t1 > 0.5, background
    elsewhere; with ``fixed``, those logits ``(4, z, y, x)`` whatever the input."""

    fuses, segments, sequential, segmentation_output = False, True, False, "classes"

    def __init__(self, fixed: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(20.0))
        self.fixed = fixed

    def predict(self, x: torch.Tensor, segment: bool = True, sequential: bool = False):
        if self.fixed is not None:
            return None, self.fixed[None] * self.gain
        t1, never = x[:, :1], torch.full_like(x[:, :1], -1.0)
        return None, torch.cat([0.5 - t1, never, t1 - 0.5, never], dim=1) * self.gain

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        return 64

    def checkpoint_fields(self) -> dict:
        return {"kind": "test"}


def _one_hot_logits(classes: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(classes).long(), 4).movedim(-1, 0).float()


def test_case_dice_follows_the_regions_and_the_empty_region_rules():
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:4, 1:4, 1:4] = 2  # 27 edema voxels
    ref[2, 2, 2] = 1  # one of them NCR
    pred = np.zeros_like(ref)
    pred[1:4, 1:4, 1:5] = 2  # 36 voxels: the 27 and 9 more
    pred[2, 2, 2] = 1
    dice = case_dice(pred, ref)
    # ET empty in both -> 1; TC the same single voxel -> 1; WT 2 * 27 / (36 + 27).
    assert dice == pytest.approx({"ET": 1.0, "TC": 1.0, "WT": 54 / 63})
    pred[5, 5, 5] = 3  # ET predicted, none in the reference -> 0; TC 2 * 1 / (2 + 1), WT 54 / 64
    assert case_dice(pred, ref) == pytest.approx({"ET": 0.0, "TC": 2 / 3, "WT": 54 / 64})


def test_whole_case_dice_of_known_logits_is_background_outside_the_brain():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[1:4, 1:4, 1:4] = 2
    ref[2, 2, 2] = 1
    classes = np.zeros_like(ref)
    classes[1:4, 1:4, 1:5] = 2
    classes[2, 2, 2] = 1
    classes[7, 7, 7] = 3  # ET outside the brain: the pipeline makes it background
    image = np.zeros((4, 8, 8, 8), np.float32)
    image[:, :6] = 0.5  # brain: z < 6
    case = PreprocessedCase("case", image, ref, None)  # type: ignore[arg-type]  # no crop record needed
    model = ClassByIntensity(_one_hot_logits(classes))
    (dice,) = whole_case_dice(model, [case], CPU)
    assert dice == pytest.approx({"ET": 1.0, "TC": 1.0, "WT": 54 / 63})


@pytest.mark.parametrize("output", ["classes", "regions"])
def test_predict_labels_are_what_nslf_segment_gives_users(tiny_case, output):
    """The same labels as :func:`nslfcore.inference.segment` on the case's files, on the brain box."""
    from nslfcore.data.brats import find_cases, load_case
    from nslfcore.data.labels import to_internal
    from nslfcore.data.transforms import preprocess_case
    from nslfcore.inference import segment

    torch.manual_seed(1)
    model = NSLF(PRESETS["compact"].replace(segmentation_output=output)).eval()
    with torch.no_grad():  # a random network predicts background everywhere; sharper logits vary by voxel
        model.fsd.classifier.weight.mul_(50)
        model.fsd.classifier.bias.zero_()
    (files,) = find_cases(tiny_case.parent)
    case = load_case(files)
    prepared = preprocess_case(case)
    users = to_internal(segment(case, model, device="cpu", precision="fp32").labels, "brats2021")
    ours = predict_labels(model, prepared.image, CPU, "fp32")
    assert ours.shape == prepared.label.shape and len(np.unique(ours)) > 1
    np.testing.assert_array_equal(ours, prepared.record.crop(users))


@dataclass(frozen=True)
class _SecondOfTwoRanks(DistributedContext):
    """Rank 1 of 2 without a process group: ``gather`` puts rank 0's scores (given) before this rank's."""

    rank: int = 1
    world_size: int = 2
    rank0_scores: tuple = ()

    def gather(self, obj):
        return [list(self.rank0_scores), obj]


def test_case_validation_shares_the_cases_out_over_ranks_and_averages_them_all():
    cases = [generate_tiny_case(seed=s, name=f"c{s}") for s in range(5)]
    dataset = BratsCropDataset(cases, (16, 16, 16), train=False)
    model = ClassByIntensity().train()
    scores = whole_case_dice(model, [dataset.cache.get(c) for c in cases], CPU)
    assert len({s["WT"] for s in scores}) > 1  # the cases score differently
    context = _SecondOfTwoRanks(rank0_scores=tuple(scores[0:4:2]))  # rank 0 scored cases 0 and 2 of the first 4
    metrics = case_validation(model, dataset, CPU, max_cases=4, context=context)
    assert model.training  # train mode restored
    for region, key in (("ET", "case_dice_et"), ("TC", "case_dice_tc"), ("WT", "case_dice_wt")):
        assert metrics[key] == pytest.approx(np.mean([s[region] for s in scores[:4]]))
    assert metrics["case_validation_s"] > 0


def test_selection_direction_and_epochs_without_whole_case_validation():
    progress = StageProgress()
    assert progress.record_validation(0.5, "max") and not progress.record_validation(0.4, "max")
    assert not progress.record_validation(None, "max")  # no whole-case validation: nothing compared
    assert (progress.epoch, progress.best_epoch, progress.patience) == (3, 1, 1)
    assert not progress.record_validation(0.3, "max") and progress.patience == 3  # epochs since the best
    assert progress.record_validation(0.6, "max") and (progress.best_metric, progress.patience) == (0.6, 0)
    with pytest.raises(ValueError, match="selection mode"):
        progress.record_validation(0.1, "lowest")  # type: ignore[arg-type]
    model = NSLF(PRESETS["compact"])
    plain = stage_for(3, TrainingOptions(), model)
    assert (plain.selection_mode, plain.case_validation_every, plain.selection_metric({"loss": 0.7})) == ("min", None, 0.7)
    whole = stage_for(3, TrainingOptions(case_validation_every=2), model)
    assert whole.selection_mode == "max" and whole.selection_metric({"loss": 0.7, "dice_wt": 0.9}) is None
    assert whole.selection_metric({"loss": 0.7, "case_dice_et": 0.3, "case_dice_tc": 0.6, "case_dice_wt": 0.9}) == (
        pytest.approx(0.6)
    )
    assert stage_for(2, TrainingOptions(case_validation_every=2), model).case_validation_every is None


def test_options_and_command_line():
    import argparse

    from nslfcore.commands.train import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--data", "d", "--out", "o", "--case-validation-every", "3", "--case-validation-max-cases", "2"]
    options = options_from_args(parser.parse_args(args))
    assert (options.case_validation_every, options.case_validation_max_cases) == (3, 2)
    assert TrainingOptions.from_json(options.to_json()) == options
    old = json.loads(TrainingOptions().to_json())
    del old["case_validation_every"], old["case_validation_max_cases"]  # options of older checkpoints
    assert TrainingOptions.from_json(json.dumps(old)) == TrainingOptions()
    assert options_from_args(parser.parse_args(["--data", "d", "--out", "o"])).case_validation_every is None
    for bad in ({"case_validation_every": 0}, {"case_validation_max_cases": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainingOptions(**bad)


# ---------------------------------------------------------------------------- the trainer, on tiny phantoms
@pytest.fixture(scope="module")
def stage3_setup(tmp_path_factory) -> tuple[Path, Path]:
    """Six tiny phantom cases and the weights of a seeded random ``compact`` NSLF to start stage 3 from."""
    from nslfcore.model_store import save_model

    folder = tmp_path_factory.mktemp("tiny-phantoms")
    write_phantom_dataset(folder / "data", 6, seed=3, tiny=True)
    torch.manual_seed(5)
    return folder / "data", save_model(NSLF(PRESETS["compact"]), folder / "start.pt", stage=3)


def _stage3(setup: tuple[Path, Path], run_dir: Path, *extra: str) -> list[dict]:
    data, init = setup
    events = run_dir.parent / f"{run_dir.name}.jsonl"
    args = ["train", "--data", str(data), "--out", str(run_dir), "--stage", "3", "--init", str(init), "--lr", "1e-2",
            "--steps-per-epoch", "1", "--events", str(events), *SMALL, *extra]  # fmt: skip
    assert nslf_main(args) == 0
    return [json.loads(line) for line in events.read_text().splitlines()]


def _validations(stream: list[dict]) -> list[dict]:
    return [e["metrics"] for e in stream if e["event"] == "validation"]


def test_stage3_selects_the_best_epoch_on_whole_case_dice_and_none_keeps_the_loss(stage3_setup, tmp_path):
    """With whole-case validation every epoch the best epoch has the highest mean whole-case Dice (here
    not the lowest loss); without it, events and selection are as they were."""
    whole = _validations(_stage3(stage3_setup, tmp_path / "whole", "--epochs", "3", "--case-validation-every", "1"))
    keys = ("case_dice_et", "case_dice_tc", "case_dice_wt")
    for metrics in whole:
        assert all(0 <= metrics[k] <= 1 for k in keys)
        assert metrics["selection"] == pytest.approx(sum(metrics[k] for k in keys) / 3)
    selections = [m["selection"] for m in whole]
    losses = [m["loss"] for m in whole]
    assert int(np.argmax(selections)) != int(np.argmin(losses)), "the data must tell the two directions apart"
    best = int(np.argmax(selections)) + 1
    assert load_checkpoint(tmp_path / "whole" / "stage3_best.pt")["epoch"] == best
    assert load_checkpoint(tmp_path / "whole" / "stage3.pt")["progress"]["best_metric"] == max(selections)

    plain = _validations(_stage3(stage3_setup, tmp_path / "plain", "--epochs", "3"))
    assert not any(k.startswith("case_") for m in plain for k in m)
    assert [m["selection"] for m in plain] == [m["loss"] for m in plain]
    assert load_checkpoint(tmp_path / "plain" / "stage3_best.pt")["epoch"] == int(np.argmin(losses)) + 1
    # Whole-case validation changes nothing in training: the crop metrics are the same.
    def crops(run: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if not k.startswith("case_") and k != "selection"} for m in run]

    assert crops(whole) == crops(plain)


def test_the_epoch_that_ends_stage3_at_the_time_limit_validates_whole_cases(stage3_setup, tmp_path):
    stream = _stage3(stage3_setup, tmp_path / "run", "--epochs", "50", "--case-validation-every", "5",
                     "--time-limit", "0.001")  # fmt: skip
    (metrics,) = _validations(stream)  # epoch 1 of 50, not a multiple of 5, but the last
    assert "case_dice_wt" in metrics and metrics["selection"] is not None
    assert load_checkpoint(tmp_path / "run" / "stage3_best.pt")["epoch"] == 1
