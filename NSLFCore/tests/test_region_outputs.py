"""Region outputs (WT, TC, ET sigmoids, as nnU-Net trains BraTS) beside the paper's 4-class softmax:
labels <-> regions, the label rule of both modes, the region loss, models, inference and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nslfcore.config import PRESETS, NSLFConfig
from nslfcore.data.labels import labels_from_regions, regions_from_labels
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.inference import run
from nslfcore.losses import Stage3Loss
from nslfcore.model_store import load_model, save_model
from nslfcore.models import NSLF
from nslfcore.models.outputs import class_probabilities, labels_from_logits, labels_from_probabilities, region_targets
from nslfcore.training.options import TrainingOptions
from nslfcore.training.stages import StageStep, region_dice

REGIONS_COMPACT = PRESETS["compact"].replace(segmentation_output="regions")
REGIONS_FAST = PRESETS["fast"].replace(segmentation_output="regions")


def _region_logits(masks: torch.Tensor, scale: float = 50.0) -> torch.Tensor:
    """Logits ``(B, 3, ...)`` that are ``+scale`` where a region mask is on and ``-scale`` where it is off."""
    return scale * (2 * masks.float() - 1)


def test_labels_and_regions_round_trip_in_numpy_and_torch():
    labels = np.random.default_rng(0).integers(0, 4, size=(6, 7, 8)).astype(np.uint8)
    regions = regions_from_labels(labels)
    assert regions.shape == (3, 6, 7, 8) and regions.dtype == bool
    np.testing.assert_array_equal(regions[0], labels > 0)  # WT = {1, 2, 3}
    np.testing.assert_array_equal(regions[1], (labels == 1) | (labels == 3))  # TC = {1, 3}
    np.testing.assert_array_equal(regions[2], labels == 3)  # ET = {3}
    np.testing.assert_array_equal(labels_from_regions(regions), labels)
    targets = region_targets(torch.from_numpy(labels.astype(np.int64))[None])
    np.testing.assert_array_equal(targets[0].numpy(), regions.astype(np.float32))


def test_region_labels_follow_the_nnunet_rule_and_nest():
    # Per voxel (WT, TC, ET) on/off -> expected internal label; the last three break the nesting.
    cases = {
        (0, 0, 0): 0, (1, 0, 0): 2, (1, 1, 0): 1, (1, 1, 1): 3,
        (0, 0, 1): 3, (0, 1, 0): 1, (1, 0, 1): 3, (0, 1, 1): 3,
    }  # fmt: skip
    masks = torch.tensor(list(cases), dtype=torch.bool).T.reshape(1, 3, 1, 1, len(cases))
    expected = torch.tensor(list(cases.values())).reshape(1, 1, 1, len(cases))
    logits = _region_logits(masks, scale=3.0)
    assert torch.equal(labels_from_logits(logits, "regions"), expected)
    probs = class_probabilities(logits, "regions")
    assert probs.shape == (1, 4, 1, 1, len(cases))
    assert (probs >= 0).all() and torch.allclose(probs.sum(dim=1), torch.ones(1, 1, 1, len(cases)))
    assert torch.equal(labels_from_probabilities(probs, "regions"), expected)
    # The region probabilities come back from the class probabilities, nested: ET <= TC <= WT.
    p = torch.sigmoid(logits)[0, :, 0, 0]
    assert torch.allclose(1 - probs[0, 0, 0, 0], torch.maximum(p[0], torch.maximum(p[1], p[2])))
    assert torch.allclose(probs[0, 1, 0, 0] + probs[0, 3, 0, 0], torch.maximum(p[1], p[2]))
    np.testing.assert_array_equal(labels_from_regions(masks[0, :, 0, 0].numpy()), expected.flatten().numpy())


def test_classes_mode_is_the_old_softmax_and_argmax_bit_for_bit():
    logits = torch.randn(2, 4, 5, 6, 7)
    logits[0, 1, 0, 0, 0] = logits[0, 2, 0, 0, 0]  # a tie: the first maximum wins, as argmax does
    assert torch.equal(labels_from_logits(logits, "classes"), logits.argmax(dim=1))
    probs = class_probabilities(logits, "classes")
    assert torch.equal(probs, torch.softmax(logits, dim=1))
    assert torch.equal(labels_from_probabilities(probs, "classes"), probs.argmax(dim=1))
    assert torch.equal(labels_from_probabilities(probs[0], "classes", channel_dim=0), probs[0].argmax(dim=0))
    with pytest.raises(ValueError, match="'classes' or 'regions'"):
        labels_from_logits(logits, "softmax")  # type: ignore[arg-type]


def test_region_loss_is_zero_for_perfect_logits_and_large_for_wrong_ones():
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 4, size=(2, 8, 8, 8)))
    loss = Stage3Loss(output="regions")
    perfect = loss(_region_logits(region_targets(labels)), labels)
    wrong = loss(_region_logits(1 - region_targets(labels)), labels)
    assert set(perfect) == {"ce", "dice", "total"}
    assert float(perfect["total"]) < 1e-4
    assert float(wrong["ce"]) > 10 and float(wrong["dice"]) > 0.99
    dice = region_dice(_region_logits(region_targets(labels)), labels, "regions")
    assert dice == {"dice_et": 1.0, "dice_tc": 1.0, "dice_wt": 1.0}
    with pytest.raises(ValueError, match="three region logits"):
        loss(torch.zeros(2, 4, 8, 8, 8), labels)


def test_configs_without_the_key_load_as_classes_and_bad_values_are_refused():
    old = PRESETS["compact"].to_dict()
    del old["segmentation_output"]
    config = NSLFConfig.from_dict(old)
    assert config.segmentation_output == "classes" and config.output_channels == 4
    assert REGIONS_COMPACT.output_channels == 3
    assert NSLFConfig.from_json(REGIONS_COMPACT.to_json()) == REGIONS_COMPACT
    with pytest.raises(ValueError, match="segmentation_output"):
        PRESETS["compact"].replace(segmentation_output="softmax")


@pytest.mark.parametrize("config", [REGIONS_COMPACT, REGIONS_FAST], ids=["compact", "fast"])
def test_region_models_give_three_channels_and_inference_a_valid_label_map(config, tmp_path):
    model = NSLF(config).eval()
    assert model.segmentation_output == "regions"
    with torch.inference_mode():
        assert model.segment(torch.rand(1, 4, 16, 20, 24)).shape == (1, 3, 16, 20, 24)
    loaded, _ = load_model(save_model(model, tmp_path / "regions.pt", stage=3, epoch=1), device="cpu")
    assert loaded.segmentation_output == "regions"
    case = generate_tiny_case(seed=3, size=(32, 32, 32))
    result = run(case, loaded, device="cpu", mode="whole", precision="fp32", label_convention="brats2023", probabilities=True)
    assert result.labels is not None and result.probabilities is not None
    assert result.labels.shape == (32, 32, 32) and set(np.unique(result.labels)) <= {0, 1, 2, 3}
    assert result.probabilities.shape == (4, 32, 32, 32)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    again = labels_from_probabilities(torch.from_numpy(result.probabilities), "regions", channel_dim=0)
    np.testing.assert_array_equal(again.numpy(), result.labels)


def test_a_region_mode_stage_3_step_trains():
    model = NSLF(REGIONS_COMPACT).train()
    step = StageStep(model, 3, TrainingOptions())
    image = torch.rand(1, 4, 32, 32, 32)
    label = torch.zeros(1, 32, 32, 32, dtype=torch.int64)
    label[:, 8:24, 8:24, 8:24] = 2
    label[:, 12:20, 12:20, 12:20] = 1
    label[:, 14:18, 14:18, 14:18] = 3
    optimizer = torch.optim.Adam(model.fsd.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        terms = step(image, label)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        losses.append(float(terms["total"].detach()))
    assert step.last_logits is not None and step.last_logits.shape == (1, 3, 32, 32, 32)
    assert losses[-1] < 0.9 * losses[0], losses
    assert set(step.stage.validation_metrics(step, label)) == {"dice_et", "dice_tc", "dice_wt"}
