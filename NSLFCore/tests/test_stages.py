"""The training stages as objects: variants for the ablations, trainable parts, optimisers, crops,
and the stage progress that checkpoints save as one unit."""

from __future__ import annotations

import pytest
import torch

from nslfcore.config import PRESETS
from nslfcore.models import NSLF
from nslfcore.training.options import TrainingOptions
from nslfcore.training.progress import StageProgress
from nslfcore.training.stages import (
    FeatureExtractionStage,
    FeatureExtractionWithoutContrastive,
    FusionStage,
    FusionWithoutRegistration,
    SegmentationStage,
    StageStep,
    stage_for,
    stages_for,
)


def _trainable(model: torch.nn.Module) -> set[str]:
    """The top-level networks with at least one trainable parameter (and the reconstruction head separately)."""
    names = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            names.add("cunet.reconstruction_head" if "reconstruction_head" in name else name.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("number", "expected"),
    [(1, {"cunet", "cunet.reconstruction_head"}), (2, {"cunet", "fcd", "gmn"}), (3, {"cunet", "fcd", "fsd"})],
)
def test_each_stage_trains_its_parts_and_freezes_the_rest(number, expected):
    model = NSLF(PRESETS["compact"])
    stage = stage_for(number, TrainingOptions(), model)
    stage.configure_trainable(model)
    assert _trainable(model) == expected
    optimizers = stage.build_optimizers(model, TrainingOptions(lr=1e-3, fine_tune_lr=1e-6))
    assert sorted(optimizers) == (["adam", "sgd"] if number == 2 else ["adam"])
    lrs = sorted({g["lr"] for g in optimizers["adam"].param_groups})
    assert lrs == ([1e-3] if number == 1 else [1e-6, 1e-3])  # trained parts at lr, fine-tuned at fine_tune_lr
    optimised = {id(p) for opt in optimizers.values() for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert optimised == trainable  # nothing trainable is left out of the optimisers, nothing frozen is in


def test_ablations_are_stage_variants():
    options, model = TrainingOptions(contrastive=False), NSLF(PRESETS["compact"])
    stages = stages_for(options, model)
    assert [type(s) for s in stages] == [FeatureExtractionWithoutContrastive, FusionStage, SegmentationStage]
    assert StageStep(model, stages[0], options).loss.weights.contrastive == 0.0
    no_gmn = NSLF(PRESETS["compact"].replace(use_gmn=False))
    fusion = stage_for(2, TrainingOptions(), no_gmn)
    assert isinstance(fusion, FusionWithoutRegistration)
    weights = StageStep(no_gmn, fusion, TrainingOptions(loss_weights=(("stage2.ncc", 3.0),))).loss.weights
    assert weights.ncc == 0.0 and weights.smooth == 0.0  # the variant's zeros win over an override
    assert sorted(fusion.build_optimizers(no_gmn, TrainingOptions())) == ["adam"]
    assert type(stage_for(1, TrainingOptions(), model)) is FeatureExtractionStage
    with pytest.raises(ValueError, match="no training stage 4"):
        stage_for(4, TrainingOptions(), model)


def test_stage_crops_and_needs():
    options = TrainingOptions(fusion_crop=(32, 48, 48), segmentation_crop=(48, 64, 64))
    model = NSLF(PRESETS["compact"])
    assert [s.crop(options) for s in stages_for(options, model)] == [(32, 48, 48), (32, 48, 48), (48, 64, 64)]
    assert [s.needs_previous_weights() for s in stages_for(options, model)] == [False, False, True]


def test_stage_progress_round_trips_and_reads_the_older_flat_checkpoints():
    progress = StageProgress()
    assert progress.record_validation(0.5) and progress.best_epoch == 1
    assert not progress.record_validation(0.7) and progress.patience == 1 and progress.epoch == 2
    assert progress.record_validation(0.4) and (progress.best_metric, progress.best_epoch, progress.patience) == (0.4, 3, 0)
    progress.step, progress.batch_in_epoch = 17, 2
    assert StageProgress.from_checkpoint({"progress": progress.to_dict()}) == progress
    flat = {"stage": 1, "model": {}, **progress.to_dict()}  # how checkpoints stored it before
    assert StageProgress.from_checkpoint(flat) == progress


def test_stage_1_selects_on_reconstruction_the_others_on_the_total():
    """Stage 1's best epoch follows the validation reconstruction, not the total with its rising contrastive term."""
    epochs = [{"loss": 0.50, "reconstruction": 0.30, "contrastive": 0.20},
              {"loss": 0.55, "reconstruction": 0.20, "contrastive": 0.35}]  # fmt: skip
    model = NSLF(PRESETS["compact"])
    for number, best_epoch in ((1, 2), (2, 1), (3, 1)):
        stage, progress = stage_for(number, TrainingOptions(), model), StageProgress()
        for metrics in epochs:
            progress.record_validation(stage.selection_metric(metrics))
        assert progress.best_epoch == best_epoch, number
    assert stage_for(1, TrainingOptions(), model).selection_metric({"loss": 0.4}) == 0.4  # reconstruction weighted 0


def test_stage_3_adds_the_fusion_term_when_weighted_with_the_stage_2_overrides():
    model = NSLF(PRESETS["compact"])
    options = TrainingOptions(loss_weights=(("stage3.fusion", 0.2), ("stage2.contrast", 1.0)))
    step = StageStep(model, stage_for(3, options, model), options)
    assert step.loss.fusion.weights.contrast == 1.0 and step.loss.fusion.weights.ncc == 0.0
    terms = step(torch.rand(1, 4, 16, 32, 32), torch.randint(0, 4, (1, 16, 32, 32)))
    assert set(terms) == {"ce", "dice", "fusion", "total"}
    terms["total"].backward()
    assert model.fcd.weight_head[0].weight.grad is not None
    plain = StageStep(model, stage_for(3, TrainingOptions(), model), TrainingOptions())
    assert "fusion" not in plain(torch.rand(1, 4, 16, 32, 32), torch.randint(0, 4, (1, 16, 32, 32)))
