"""On-the-fly synthesis training (nslfcore.synthesis.bank, .preprocess, .dataset; nslf train --data synth:BANK):
a label bank written by worker processes and resumed, the torch preprocessing against the numpy one, crops,
determinism, sequence dropout, and a training step on synthesised crops."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from nslfcore import MODALITIES
from nslfcore.cli import main as nslf_main
from nslfcore.data.case import Case
from nslfcore.data.labels import ET
from nslfcore.data.phantom import brats_geometry
from nslfcore.data.transforms import normalize, preprocess_case
from nslfcore.synthesis.bank import LabelBankError, read_label_bank, write_label_bank
from nslfcore.synthesis.dataset import SynthesisCropDataset, crop_centre, pad_to
from nslfcore.synthesis.generator import synthesise_images, torch_generator
from nslfcore.synthesis.labels import TARGET_CLASS, target_classes
from nslfcore.synthesis.preprocess import _outliers, brain_mask, normalize_robust, preprocess

CROP = (32, 48, 48)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """Two label maps of seed 5, written by two worker processes."""
    return write_label_bank(tmp_path_factory.mktemp("bank"), n=2, seed=5, workers=2)


@pytest.fixture(scope="module")
def small_volumes(bank):
    """Synthesised images (scanner units) and target classes on the first map at half resolution (cheap), five draws;
    the third has a 32767 spike, an outlier for the robust normalisation."""
    labels = np.ascontiguousarray(bank.labels(0)[::2, ::2, ::2])
    volumes = []
    for seed in range(5):
        images, warped = synthesise_images(labels, torch_generator(3, seed), warp=True)
        if seed == 2:
            images[1, images.shape[1] // 2, images.shape[2] // 2, images.shape[3] // 2] = 32767.0
        volumes.append((images, torch.from_numpy(target_classes(warped.numpy()).astype(np.int64))))
    return volumes


def test_a_bank_written_by_two_workers_reads_back_and_resumes(bank, tmp_path):
    assert [e.index for e in bank.entries] == [0, 1] and bank.seed == 5
    grid = bank.geometry.shape
    for position, entry in enumerate(bank.entries):
        box = bank.labels(position)
        assert box.dtype == np.uint8 and box.shape == entry.shape
        assert set(np.unique(box)) & set(TARGET_CLASS)  # a tumour in every map
        head = np.argwhere(box > 0)
        for axis in range(3):  # the head's box plus 8 voxels, cut only by the grid
            before, after = head[:, axis].min(), box.shape[axis] - 1 - head[:, axis].max()
            assert before == 8 if entry.start[axis] > 0 else before <= 8
            assert after == 8 if entry.start[axis] + entry.shape[axis] < grid[axis] else after <= 8
        full = bank.full_labels(position)
        assert full.shape == grid and int((full > 0).sum()) == int((box > 0).sum())
    assert read_label_bank(bank.folder) == bank

    copy = tmp_path / "copy"
    shutil.copytree(bank.folder, copy)
    kept = (copy / "labels-00000.npy").stat().st_mtime_ns
    drawn = np.load(copy / "labels-00001.npy")
    (copy / "labels-00001.npy").unlink()
    with pytest.raises(LabelBankError, match="labels-00001"):
        read_label_bank(copy)
    with pytest.raises(LabelBankError, match="seed 5"):
        write_label_bank(copy, n=2, seed=6)
    again = write_label_bank(copy, n=2, seed=5, workers=1)  # resumes: the missing map only, the same bytes
    assert (copy / "labels-00000.npy").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(again.labels(1), drawn)
    assert again.entries == bank.entries


def test_nslf_synth_bank_resumes_and_refuses_another_seed(bank, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(bank.folder, copy)
    assert nslf_main(["synth", "--bank", "--out", str(copy), "--n", "2", "--seed", "5", "--workers", "2"]) == 0
    assert "2 maps (0 new" in capsys.readouterr().out  # both complete: nothing drawn again
    assert nslf_main(["synth", "--bank", "--out", str(copy), "--n", "2", "--seed", "6"]) == 1
    assert "holds label maps of seed 5" in capsys.readouterr().out


def test_reading_a_folder_without_a_bank_says_how_to_write_one(tmp_path):
    with pytest.raises(LabelBankError, match="nslf synth --bank"):
        read_label_bank(tmp_path)


def test_torch_normalisation_equals_the_numpy_one_on_synthesised_volumes(small_volumes):
    for images, _ in small_volumes:
        mask = brain_mask(images)
        reference = normalize(images.numpy(), mask.numpy(), "robust")
        np.testing.assert_allclose(normalize_robust(images, mask).numpy(), reference, rtol=0, atol=1e-5)
    images, _ = small_volumes[2]
    mask = brain_mask(images)
    assert _outliers(images[1], mask, images[1][mask]) is not None  # the outlier path was taken


def test_torch_preprocessing_equals_preprocess_case(small_volumes):
    for images, target in small_volumes[:2]:
        z, y, x = images.shape[1:]
        case = Case("c", {m: images[c].numpy() for c, m in enumerate(MODALITIES)}, target.numpy().astype(np.uint8),
                    brats_geometry((x, y, z)))  # fmt: skip
        reference = preprocess_case(case)
        image, label = preprocess(images, target)
        assert tuple(image.shape[1:]) == reference.record.shape
        np.testing.assert_allclose(image.numpy(), reference.image, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(label.numpy(), reference.label)


def test_crop_centres_follow_the_tumour_and_enhancing_fractions():
    label = torch.zeros(40, 40, 40, dtype=torch.int64)
    label[5:8, 5:8, 5:8] = 2
    label[30, 30, 30] = ET
    image = torch.zeros(4, 40, 40, 40)
    image[:, 2:38, 2:38, 2:38] = 1.0
    crop = (16, 16, 16)
    for seed in range(5):
        centre, tumour = crop_centre(image, label, crop, 0.0, 1.0, torch_generator(seed))
        assert tumour and centre == (30, 30, 30)
        centre, tumour = crop_centre(image, label, crop, 1.0, 0.0, torch_generator(seed))
        assert tumour and all(8 <= c <= 32 for c in centre)  # a tumour voxel, moved inwards to fit the crop
        assert any(int(label[tuple(min(max(v + d, 0), 39) for v, d in zip(centre, (dz, dy, dx)))]) > 0
                   for dz in range(-3, 4) for dy in range(-3, 4) for dx in range(-3, 4))  # fmt: skip
        centre, tumour = crop_centre(image, label, crop, 0.0, 0.0, torch_generator(seed))
        assert not tumour and int(label[centre]) == 0 and float(image[:, centre[0], centre[1], centre[2]].max()) > 0
    assert pad_to(torch.ones(2, 10, 20, 5), (12, 16, 8)).shape == (2, 12, 20, 8)
    assert float(pad_to(torch.ones(1, 10, 20, 5), (12, 16, 8))[0, 0].sum()) == 0  # symmetric: one zero slice first


@pytest.fixture(scope="module")
def tumour_crop(bank):
    """Item 0 of a dataset whose crops are all tumour-centred and lose one sequence."""
    dataset = SynthesisCropDataset(bank, CROP, tumour_fraction=1.0, sequence_dropout=1.0, seed=2)
    return dataset[0]


def test_a_tumour_centred_crop_has_the_shape_classes_and_dropout_asked_for(bank, tumour_crop):
    image, label = tumour_crop["image"], tumour_crop["label"]
    assert image.shape == (4, *CROP) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert label.shape == CROP and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 1, 2, 3} and bool((label > 0).any())
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    empty = [c for c in range(4) if float(image[c].abs().max()) == 0.0]
    assert len(empty) == 1  # sequence dropout: exactly one channel zeroed
    assert tumour_crop["name"] == "labels-00000"
    dataset = SynthesisCropDataset(bank, CROP, samples_per_case=3)
    assert len(dataset) == 6 and dataset.names == ["labels-00000", "labels-00001"]


def test_items_are_a_function_of_seed_epoch_and_index(bank, tumour_crop):
    dataset = SynthesisCropDataset(bank, CROP, tumour_fraction=1.0, sequence_dropout=1.0, seed=2)
    same = dataset[0]
    assert torch.equal(same["image"], tumour_crop["image"]) and torch.equal(same["label"], tumour_crop["label"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["image"], tumour_crop["image"])


def test_nslf_train_takes_a_step_on_a_label_bank(bank, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match="validation uses 2 of the training maps"):
        code = nslf_main(["train", "--data", f"synth:{bank.folder}", "--out", str(run_dir), "--stage", "1",
                          "--epochs", "1", "--steps-per-epoch", "1", "--config", "compact", "--fusion-crop", "32", "32",
                          "32", "--device", "cpu", "--deterministic"])  # fmt: skip
    assert code == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["data"] == f"synth:{bank.folder}"
    assert run["split"] == {"train": ["labels-00000", "labels-00001"], "valid": ["Synth-00000", "Synth-00001"]}
    valid = run_dir / "data" / "synth-valid"
    assert sorted(os.listdir(valid / "Synth-00000")) == [f"Synth-00000-{s}.nii.gz" for s in ("seg", "t1c", "t1n", "t2f", "t2w")]
    assert (run_dir / "stage1.pt").exists() and (run_dir / "stage1_best.pt").exists()


def test_nslf_train_refuses_a_folder_without_a_bank_and_writes_nothing(tmp_path, capsys):
    code = nslf_main(["train", "--data", f"synth:{tmp_path / 'none'}", "--out", str(tmp_path / "run"), "--stage", "1"])
    assert code == 1 and "nslf synth --bank" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
