"""Training augmentation levels and enhancing-tumour crops (issue 15, points 2 and 4)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from monai.transforms import RandAdjustContrast

from nslfcore.data.augmentation import AUGMENTATION_LEVELS, RandPerModalityd, augmentation_transforms, training_augmentation
from nslfcore.data.dataset import BratsCropDataset
from nslfcore.data.labels import ET
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.data.transforms import preprocess_case, train_transforms, valid_transforms
from nslfcore.training.options import TrainingOptions

CROP = (32, 32, 32)


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    prepared = preprocess_case(generate_tiny_case(3, size=(48, 56, 52)))
    assert (prepared.label == ET).any()
    return {"image": prepared.image.astype(np.float32), "label": prepared.label[None].astype(np.float32)}


def _run(transform, data: dict[str, np.ndarray], seed: int) -> dict:
    transform.set_random_state(seed=seed)
    out = transform(dict(data))
    return {k: np.asarray(v) for k, v in out.items() if k in ("image", "label")} | {"crop_center": out["crop_center"]}


@pytest.mark.parametrize("level", AUGMENTATION_LEVELS)
def test_levels_keep_shapes_labels_and_range(sample, level):
    transform = train_transforms(CROP, tumour_fraction=0.9, augment=level)
    for seed in range(4):
        out = _run(transform, sample, seed)
        assert out["image"].shape == (4, *CROP) and out["label"].shape == (1, *CROP)
        assert set(np.unique(out["label"])) <= {0.0, 1.0, 2.0, 3.0}  # nearest neighbour: no new label values
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0  # clipped to the normalised range


def test_light_is_what_training_always_used_and_none_is_the_crop(sample):
    light, old_default = train_transforms(CROP, augment="light"), train_transforms(CROP, augment=True)
    none, crop_only = train_transforms(CROP, augment="none"), train_transforms(CROP, augment=False)
    for seed in range(3):
        a, b = _run(light, sample, seed), _run(old_default, sample, seed)
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
        c, d = _run(none, sample, seed), _run(crop_only, sample, seed)
        assert np.array_equal(c["image"], d["image"])
        z, y, x = (s - r // 2 for s, r in zip(c["crop_center"], CROP))
        expected = np.clip(sample["image"], 0, 1)[:, z : z + CROP[0], y : y + CROP[1], x : x + CROP[2]]
        np.testing.assert_array_equal(c["image"], expected)  # "none": exactly the crop
    assert augmentation_transforms("none") == []
    with pytest.raises(ValueError, match="augmentation must be one of"):
        augmentation_transforms("extreme")


def test_strong_is_seeded_and_varies_with_the_seed(sample):
    transform = train_transforms(CROP, augment="strong")
    first, again, other = _run(transform, sample, 7), _run(transform, sample, 7), _run(transform, sample, 8)
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["label"], again["label"])
    assert not np.array_equal(first["image"], other["image"])
    # Over a few seeds the strong level changes intensities more than the light one does.
    def change(level: str) -> float:
        augmented, plain = train_transforms(CROP, augment=level), train_transforms(CROP, augment="none")
        return float(np.mean([np.abs(_run(augmented, sample, s)["image"] - _run(plain, sample, s)["image"]).mean()
                              for s in range(4)]))  # fmt: skip

    strong, light = change("strong"), change("light")
    assert strong > light


def test_intensity_draws_are_per_modality():
    image = np.tile(np.linspace(0.05, 1, 16**3, dtype=np.float32).reshape(1, 16, 16, 16), (4, 1, 1, 1))
    transform = RandPerModalityd(["image"], [RandAdjustContrast(prob=1.0, gamma=(0.5, 2.0))])
    transform.set_random_state(seed=0)
    out = np.asarray(transform({"image": image})["image"])
    assert out.shape == image.shape
    assert len({round(float(out[c].mean()), 6) for c in range(4)}) == 4  # four modalities, four gammas
    transform.set_random_state(seed=0)
    assert np.array_equal(np.asarray(transform({"image": image})["image"]), out)


def test_strong_level_draws_each_modality_separately():
    image = np.tile(np.linspace(0.05, 1, 16**3, dtype=np.float32).reshape(1, 16, 16, 16), (4, 1, 1, 1))
    per_modality = augmentation_transforms("strong")[-1]  # the strong level's intensity part
    assert isinstance(per_modality, RandPerModalityd)
    for seed in range(5):
        per_modality.set_random_state(seed=seed)
        out = np.asarray(per_modality({"image": image})["image"])
        assert out.shape == image.shape and out.dtype == np.float32
        # Four identical modalities in; the noise alone would leave the means equal to 1e-3.
        assert len({round(float(out[c].mean()), 2) for c in range(4)}) >= 3


def test_training_augmentation_is_the_level_alone(sample):
    crop = {k: v[:, :CROP[0], :CROP[1], :CROP[2]] for k, v in sample.items()}
    augment = training_augmentation("strong")
    augment.set_random_state(seed=5)
    first = np.asarray(augment(dict(crop))["image"])
    augment.set_random_state(seed=5)
    assert first.shape == (4, *CROP) and np.array_equal(first, np.asarray(augment(dict(crop))["image"]))
    assert np.array_equal(np.asarray(training_augmentation("none")(dict(crop))["image"]), crop["image"])


def test_dataset_items_are_seeded_and_validation_is_never_augmented():
    case = generate_tiny_case(4, size=(40, 48, 48))
    train = BratsCropDataset([case], CROP, augment="strong", samples_per_case=2, seed=11, et_fraction=0.5)
    again = BratsCropDataset([case], CROP, augment="strong", samples_per_case=2, seed=11, et_fraction=0.5)  # a resumed run
    train.set_epoch(2)
    again.set_epoch(2)
    items = [train[i] for i in range(2)]
    assert all(torch.equal(a["image"], again[i]["image"]) and torch.equal(a["label"], again[i]["label"])
               for i, a in enumerate(items))  # fmt: skip
    train.set_epoch(3)
    assert not all(torch.equal(a["image"], train[i]["image"]) for i, a in enumerate(items))
    valid = BratsCropDataset([case], CROP, train=False, augment="strong", et_fraction=1.0)
    prepared = preprocess_case(case)
    expected = valid_transforms(CROP)({"image": prepared.image, "label": prepared.label[None].astype(np.float32)})
    np.testing.assert_array_equal(valid[0]["image"].numpy(), np.asarray(expected["image"]))


def test_et_fraction_guarantees_enhancing_tumour_in_the_crop(sample):
    with_et = train_transforms(CROP, tumour_fraction=0.0, augment="none", et_fraction=1.0)
    assert all((_run(with_et, sample, seed)["label"] == ET).any() for seed in range(12))
    # et_fraction 0 draws the same numbers as before it existed: same centres as a plain tumour crop.
    plain = train_transforms(CROP, tumour_fraction=0.5, augment="none")
    zero = train_transforms(CROP, tumour_fraction=0.5, augment="none", et_fraction=0.0)
    assert [_run(plain, sample, s)["crop_center"] for s in range(6)] == [_run(zero, sample, s)["crop_center"] for s in range(6)]
    # Without ET the crop falls back to tumour.
    no_et = dict(sample, label=np.where(sample["label"] == ET, 1.0, sample["label"]).astype(np.float32))
    assert all((_run(with_et, no_et, seed)["label"] > 0).any() for seed in range(6))


def test_options_and_cli():
    with pytest.raises(ValueError, match="et_fraction"):
        TrainingOptions(et_fraction=1.5)
    with pytest.raises(ValueError, match="augmentation must be"):
        TrainingOptions(augmentation="heavy")  # type: ignore[arg-type]
    assert TrainingOptions().augmentation == "light" and TrainingOptions().et_fraction == 0.0
    from nslfcore.commands.train import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = options_from_args(
        parser.parse_args(["--data", "d", "--out", "o", "--augmentation", "strong", "--et-fraction", "0.4"])
    )
    assert options.augmentation == "strong" and options.et_fraction == 0.4
