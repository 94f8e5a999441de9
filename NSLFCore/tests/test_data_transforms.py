"""Preprocessing, invertible brain crop with geometry kept, caching, and the crop dataset."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader

from nslfcore import MODALITIES
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.cache import CaseCache
from nslfcore.data.case import Geometry
from nslfcore.data.dataset import BratsCropDataset
from nslfcore.data.io import read_image, write_image
from nslfcore.data.labels import internal_to_brats2021
from nslfcore.data.phantom import generate_tiny_case, write_case
from nslfcore.data.transforms import (
    FUSION_CROP, SEGMENTATION_CROP, brain_bbox, brain_mask, normalize, preprocess_case,
)  # fmt: skip


def _rotation(ax, ay, az):
    cx, cy, cz, sx, sy, sz = np.cos(ax), np.cos(ay), np.cos(az), np.sin(ax), np.sin(ay), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_normalisation_paper_and_zscore():
    rng = np.random.default_rng(0)
    image = np.zeros((2, 10, 12, 14), np.float32)
    image[:, 2:8, 3:9, 4:10] = rng.uniform(50, 400, (2, 6, 6, 6))
    mask = brain_mask(image)
    paper = normalize(image, mask, "paper")
    assert paper.dtype == np.float32 and paper.min() == 0.0 and paper.max() == pytest.approx(1.0)
    assert (paper[:, ~mask] == 0).all()
    expected = (image - image.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(image, axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(paper, expected, atol=1e-6)  # shift-invariance: equals min-max
    z = normalize(image, mask, "zscore")
    assert abs(z[0][mask].mean()) < 1e-5 and z[0][mask].std() == pytest.approx(1.0, abs=1e-4)
    assert (z[:, ~mask] == 0).all()
    with pytest.raises(ValueError, match="unknown"):
        normalize(image, mask, "percentile")


def test_brain_bbox():
    mask = np.zeros((10, 12, 14), bool)
    mask[2:5, 3:9, 7] = True
    assert brain_bbox(mask) == ((2, 3, 7), (5, 9, 8))
    assert brain_bbox(mask, margin=3) == ((0, 0, 4), (8, 12, 11))


def test_geometry_kept_through_read_preprocess_inverse_write(tmp_path):
    """Oblique, anisotropic grid: read -> preprocess (brain crop + normalise) -> uncrop -> write keeps the grid and voxels."""
    case = generate_tiny_case(seed=4, size=(20, 30, 26))
    direction = _rotation(0.3, -0.2, 0.5)
    geometry = Geometry(size=(26, 30, 20), spacing=(0.8, 1.1, 2.5), origin=(10.5, -20.25, 33.0),
                        direction=tuple(tuple(r) for r in direction))  # fmt: skip
    folder = tmp_path / "oblique"
    for m in MODALITIES:
        write_image(case.images[m], geometry, folder / f"oblique_{m}.nii.gz", np.float32)
    write_image(internal_to_brats2021(case.label), geometry, folder / "oblique_seg.nii.gz", np.uint8)
    loaded = load_case(find_cases(folder)[0], require_label=True)
    image = sitk.ReadImage(str(folder / "oblique_t1.nii.gz"))
    assert loaded.geometry.size == image.GetSize()
    np.testing.assert_allclose(loaded.geometry.spacing, (0.8, 1.1, 2.5), atol=1e-5)
    np.testing.assert_allclose(np.array(loaded.geometry.direction), direction, atol=1e-5)
    ijk = (3, 7, 11)
    np.testing.assert_allclose((loaded.geometry.ijk_to_lps() @ [*ijk, 1])[:3], image.TransformIndexToPhysicalPoint(ijk), atol=1e-4)

    pre = preprocess_case(loaded)
    assert pre.image.shape[0] == 4 and pre.image.shape[1:] == pre.record.shape
    assert pre.record.shape != loaded.geometry.shape  # the box is smaller than the grid
    # inverse: paste back and write on the original grid
    restored = pre.record.uncrop(pre.label)
    out = write_image(internal_to_brats2021(restored), pre.record.geometry, tmp_path / "restored_seg.nii.gz", np.uint8)
    back, back_geometry = read_image(out)
    ref = sitk.ReadImage(str(folder / "oblique_seg.nii.gz"))
    assert back_geometry.size == ref.GetSize()
    np.testing.assert_allclose(back_geometry.spacing, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back_geometry.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(np.ravel(back_geometry.direction), ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(back, sitk.GetArrayFromImage(ref))
    full_norm = normalize(loaded.stacked(), brain_mask(loaded.stacked()))
    np.testing.assert_allclose(pre.record.uncrop(pre.image), full_norm, atol=1e-6)
    # the cropped volume on its own grid lands on the same physical voxels
    cropped = write_image(pre.image[2], pre.record.cropped_geometry, tmp_path / "cropped_t2.nii.gz", np.float32)
    resampled = sitk.Resample(sitk.ReadImage(str(cropped)), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(resampled), full_norm[2], atol=1e-6)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    for i in range(2):
        write_case(generate_tiny_case(seed=8, size=(40, 44, 44), index=i), root)
    return root


@pytest.mark.parametrize("crop", [FUSION_CROP, SEGMENTATION_CROP])
def test_dataset_crops_shapes_and_ranges(tiny_folder, crop):
    cases = find_cases(tiny_folder)
    for train in (True, False):
        dataset = BratsCropDataset(cases, crop_size=crop, train=train)
        item = dataset[0]
        assert item["image"].shape == (4, *crop) and item["image"].dtype == torch.float32
        assert item["label"].shape == crop and item["label"].dtype == torch.int64
        assert item["name"] == "BraTS2021_00000"
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        assert float(item["image"].max()) > 0.5
        assert set(item["label"].unique().tolist()) <= {0, 1, 2, 3} and int(item["label"].max()) >= 2


def test_validation_crops_are_deterministic_training_crops_follow_epoch(tiny_folder):
    cases = find_cases(tiny_folder)
    valid = BratsCropDataset(cases, crop_size=(16, 24, 24), train=False)
    assert torch.equal(valid[1]["image"], valid[1]["image"])
    train = BratsCropDataset(cases, crop_size=(16, 24, 24), samples_per_case=4)
    train.set_epoch(3)
    first = [train[i]["image"] for i in range(8)]
    assert all(torch.equal(a, train[i]["image"]) for i, a in enumerate(first))
    train.set_epoch(4)
    assert not all(torch.equal(a, train[i]["image"]) for i, a in enumerate(first))


@pytest.mark.parametrize("fraction", [0.25, 0.8])
def test_tumour_fraction_honoured(fraction):
    case = generate_tiny_case(seed=2, size=(48, 64, 64))
    dataset = BratsCropDataset([case], crop_size=(16, 16, 16), tumour_fraction=fraction, augment=False, samples_per_case=200)
    centred = [int(dataset[i]["label"][8, 8, 8] > 0) for i in range(len(dataset))]
    assert np.mean(centred) == pytest.approx(fraction, abs=0.1)


def test_loader_with_workers(tiny_folder):
    dataset = BratsCropDataset(find_cases(tiny_folder), crop_size=FUSION_CROP, samples_per_case=2)
    dataset.preload()
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["image"].shape == (2, 4, *FUSION_CROP) and batches[0]["label"].shape == (2, *FUSION_CROP)
    assert batches[0]["name"] == ["BraTS2021_00000", "BraTS2021_00000"]


def test_disk_cache(tiny_folder, tmp_path):
    cases = find_cases(tiny_folder)
    cache = CaseCache(cache_dir=tmp_path / "cache")
    first = cache.get(cases[0])
    assert len(list((tmp_path / "cache").glob("*.image.npy"))) == 1
    again = CaseCache(cache_dir=tmp_path / "cache").get(cases[0])  # a fresh process would read the .npy files
    assert isinstance(again.image, np.memmap)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    assert again.record == first.record
    other = CaseCache(normalization="zscore", cache_dir=tmp_path / "cache")
    assert other.key(cases[0]) != cache.key(cases[0])  # parameters are part of the key
    other.get(cases[0])
    assert len(list((tmp_path / "cache").glob("*.image.npy"))) == 2


def test_cache_key_follows_file_changes(tiny_folder, tmp_path):
    import os
    import shutil

    shutil.copytree(tiny_folder / "BraTS2021_00000", tmp_path / "BraTS2021_00000")
    (files,) = find_cases(tmp_path)
    cache = CaseCache()
    before = cache.key(files)
    assert cache.key(files) == before
    os.utime(files.images["t2"], ns=(1, 1))
    assert cache.key(files) != before
