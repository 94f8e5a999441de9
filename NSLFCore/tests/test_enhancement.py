"""T1ce enhancement after normalisation (nslfcore.data.enhancement) and the bright-structure augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nslfcore.data.augmentation import AUGMENTATION_LEVELS, augmentation_transforms
from nslfcore.data.bright_structures import RandBrightStructuresd
from nslfcore.data.enhancement import add_bright_vessels, brighter_probability, enhancement_contrast
from nslfcore.data.labels import ET
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.data.transforms import brain_mask, normalize, train_transforms


@pytest.fixture(scope="module")
def case():
    for seed in range(20):
        candidate = generate_tiny_case(seed=seed, size=(64, 64, 64))
        if (candidate.label == ET).sum() > 50:
            return candidate
    raise AssertionError("no tiny phantom with enhancing tumour")


def test_brighter_probability_is_the_mann_whitney_auc():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400).round(1), rng.normal(0.0, 1.0, 700).round(1)  # rounded: ties count 1/2
    u = mannwhitneyu(a, b, alternative="two-sided").statistic
    assert brighter_probability(a, b) == pytest.approx(u / (a.size * b.size), abs=1e-12)
    assert brighter_probability(np.array([2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(0.5)
    assert np.isnan(brighter_probability(np.array([]), b))


def test_phantom_enhancement_survives_the_default_normalisation(case):
    stack = case.stacked()
    brain = brain_mask(stack)
    raw = enhancement_contrast(stack[1], case.label, brain)
    normalised = enhancement_contrast(normalize(stack, brain)[1], case.label, brain)
    assert raw.et_voxels == normalised.et_voxels == int((case.label == ET).sum())
    assert normalised.auc_vs_healthy == pytest.approx(raw.auc_vs_healthy) and raw.auc_vs_healthy > 0.9
    assert normalised.et_median > normalised.healthy_median and 0 < normalised.et_median <= 1


def test_bright_vessels_compress_the_normalised_t1ce(case):
    stack = case.stacked()
    brain = brain_mask(stack)
    t1ce = add_bright_vessels(case.images["t1ce"], case.label, brain, factor=2.0, voxels=400, seed=1)
    changed = t1ce != np.asarray(case.images["t1ce"], dtype=np.float32)
    assert changed.sum() >= 200 and not (changed & ((case.label > 0) | ~brain)).any()  # healthy brain only
    reference = np.percentile(np.asarray(case.images["t1ce"])[case.label == ET], 99)
    assert np.allclose(t1ce[changed], 2.0 * reference)
    stressed = stack.copy()
    stressed[1] = t1ce
    before = enhancement_contrast(normalize(stack, brain)[1], case.label, brain)
    after = enhancement_contrast(normalize(stressed, brain)[1], case.label, brain)
    # min-max: ET now sits at about max_before / max_after of where it was; the ranking barely moves
    assert after.et_median < 0.75 * before.et_median
    assert after.auc_vs_other_tumour == pytest.approx(before.auc_vs_other_tumour)


def _crop(case) -> dict:
    stack = case.stacked()
    return {"image": normalize(stack, brain_mask(stack)), "label": case.label[None].astype(np.float32)}


def test_bright_structures_scale_a_channel_and_paint_tubes_only_in_healthy_brain(case):
    data = _crop(case)
    transform = RandBrightStructuresd(prob=1.0, compression=(0.5, 0.5), tubes=(3, 3), length=20)
    transform.set_random_state(seed=0)
    out = transform(data)
    image, before = np.asarray(out["image"]), data["image"]
    healthy = np.any(before > 0, axis=0) & (case.label == 0)
    for c in range(4):
        tube = image[c] != 0.5 * before[c]
        assert 20 < tube.sum() and not (tube & ~healthy).any(), c
        assert np.all(image[c][tube] == 1.0)
    np.testing.assert_array_equal(out["label"], data["label"])


def test_bright_structures_are_seeded_and_probability_zero_is_identity(case):
    data = _crop(case)
    runs = []
    for _ in range(2):
        transform = RandBrightStructuresd(prob=0.5)
        transform.set_random_state(seed=7)
        runs.append(np.asarray(transform(data)["image"]))
    np.testing.assert_array_equal(runs[0], runs[1])
    still = RandBrightStructuresd(prob=0.0)
    np.testing.assert_array_equal(np.asarray(still(data)["image"]), data["image"])
    with pytest.raises(ValueError, match="compression"):
        RandBrightStructuresd(compression=(0.9, 0.5))


def test_strong_bright_level_runs_in_the_training_transforms(case):
    assert "strong-bright" in AUGMENTATION_LEVELS
    assert isinstance(augmentation_transforms("strong-bright")[-1], RandBrightStructuresd)
    assert not any(isinstance(t, RandBrightStructuresd) for t in augmentation_transforms("strong"))
    transform = train_transforms((32, 32, 32), tumour_fraction=1.0, augment="strong-bright")
    transform.set_random_state(seed=3)
    out = transform(_crop(case))
    image = torch.as_tensor(np.asarray(out["image"]))
    assert image.shape == (4, 32, 32, 32) and float(image.min()) >= 0 and float(image.max()) <= 1
    assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 1.0, 2.0, 3.0}
