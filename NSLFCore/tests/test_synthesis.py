"""The synthesis engine (nslfcore.synthesis): orderings kept on every sequence, structures, tumour types,
acquisition, determinism, files, and sequence dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nslfcore import MODALITIES
from nslfcore.data.augmentation import RandDropSequenced
from nslfcore.synthesis import labels as L
from nslfcore.synthesis.acquisition import thick_slices
from nslfcore.synthesis.generator import synthesise_images, torch_generator
from nslfcore.synthesis.intensities import impose_orderings, sample_contrast
from nslfcore.synthesis.label_map import generate_label_map
from nslfcore.synthesis.tumours import TUMOUR_TYPES


@pytest.fixture(scope="module")
def label_maps():
    """One label map per tumour type (seed 3), generated once for the module."""
    return {kind: generate_label_map(3, index, kind) for index, kind in enumerate(TUMOUR_TYPES)}


def _holds(means: torch.Tensor, sequence: str, brighter: int, darker: int) -> bool:
    c = MODALITIES.index(sequence)
    return float(means[c, brighter]) >= L.ORDER_RATIO * float(means[c, darker]) + L.ORDER_MARGIN - 1e-6


def test_contrast_draws_keep_every_ordering_and_vary():
    draws = [sample_contrast(torch_generator(7, seed))[0] for seed in range(200)]
    for means in draws:
        assert all(_holds(means, *rule) for rule in L.ORDERINGS)
        assert torch.all(means[:, L.BACKGROUND] == 0)
    stack = torch.stack(draws)
    wm, gm = L.WM, L.CORTICAL_GM
    t1 = MODALITIES.index("t1")
    # the rest is left to chance: WM is brighter than GM on T1 in some draws and darker in others
    brighter = (stack[:, t1, wm] > stack[:, t1, gm]).float().mean()
    assert 0.2 < float(brighter) < 0.95


def test_impose_orderings_repairs_a_reversed_table():
    means = torch.full((4, L.NUM_LABELS), 0.5)
    means[MODALITIES.index("t1ce"), L.ENHANCING] = 0.1  # enhancing darker than WM on T1ce: broken
    means[MODALITIES.index("flair"), L.CSF] = 0.9  # CSF bright on FLAIR: broken
    fixed = impose_orderings(means)
    assert all(_holds(fixed, *rule) for rule in L.ORDERINGS)
    assert torch.equal(means[MODALITIES.index("t1ce"), L.ENHANCING], torch.tensor(0.1))  # the input is left as it was


@pytest.mark.parametrize("seed", range(4))
def test_every_label_keeps_its_ordering_in_the_synthesised_images(label_maps, seed):
    """The issue's check: in the final images (after texture, blur, slices, bias, noise, scanner units), the
    median of each label's interior keeps every ordering of ORDERINGS on its sequence."""
    synthesis = label_maps[TUMOUR_TYPES[seed % len(TUMOUR_TYPES)]]
    images, labels = synthesise_images(synthesis.labels, torch_generator(11, seed))
    labels_np = labels.numpy()
    for sequence, brighter, darker in L.ORDERINGS:
        c = MODALITIES.index(sequence)
        medians = []
        for label in (brighter, darker):
            mask = labels_np == label
            interior = ndimage.binary_erosion(mask, iterations=1)
            mask = interior if interior.sum() >= 20 else mask
            if mask.sum() < 5:
                break
            medians.append(float(np.median(images[c].numpy()[mask])))
        else:
            assert medians[0] > medians[1], (sequence, L.LABEL_NAMES[brighter], L.LABEL_NAMES[darker], medians)


def test_label_maps_hold_the_look_alike_structures_and_each_tumour_type(label_maps):
    for kind, synthesis in label_maps.items():
        present = set(np.unique(synthesis.labels).tolist())
        assert {L.CSF, L.VENTRICLE, L.CORTICAL_GM, L.DEEP_GM, L.WM} <= present, kind
        assert synthesis.tumour_type == kind
        volume = np.bincount(synthesis.labels.ravel(), minlength=L.NUM_LABELS)
        assert 10_000 < volume[L.VENTRICLE] < 80_000, kind  # 10-80 mL of ventricles
        if kind == "glioblastoma":
            assert volume[L.ENHANCING] > 0 and volume[L.NECROSIS] > 0 and volume[L.OEDEMA] > 0
        if kind == "non_enhancing_glioblastoma":
            assert volume[L.ENHANCING] == 0 and volume[L.NECROSIS] > 0
        if kind == "metastases":
            assert volume[L.ENHANCING] > 0
            assert volume[L.OEDEMA] > volume[L.ENHANCING] + volume[L.NECROSIS]
        if kind == "lower_grade_glioma":
            assert volume[L.NON_ENHANCING] > volume[L.NECROSIS]
            assert volume[L.ENHANCING] < 0.05 * volume[L.NON_ENHANCING]
    counts = [int(np.bincount(s.labels.ravel(), minlength=L.NUM_LABELS)[L.VESSEL]) for s in label_maps.values()]
    assert max(counts) > 0  # vessels in at least one of the four


def test_vessels_never_cross_the_tumour():
    rng = np.random.default_rng(0)
    labels = np.full((40, 40, 40), L.WM, np.uint8)
    labels[10:30, 10:30, 10:30] = L.ENHANCING
    depth = np.full(labels.shape, 3.0, np.float32)
    from nslfcore.synthesis.anatomy import add_vessels

    add_vessels(rng, labels, depth, 30)
    assert (labels == L.VESSEL).any()
    assert (labels[10:30, 10:30, 10:30] == L.ENHANCING).all()


def test_target_classes_map_tumour_labels_to_the_internal_classes():
    synthesis = np.arange(L.NUM_LABELS, dtype=np.uint8)
    expected = np.zeros(L.NUM_LABELS, np.uint8)
    expected[[L.NECROSIS, L.NON_ENHANCING]] = 1
    expected[L.OEDEMA] = 2
    expected[L.ENHANCING] = 3
    np.testing.assert_array_equal(L.target_classes(synthesis), expected)


def test_synthesis_is_deterministic_per_seed_and_differs_between_seeds(label_maps):
    labels = label_maps["metastases"].labels
    a, _ = synthesise_images(labels, torch_generator(5, 1))
    b, _ = synthesise_images(labels, torch_generator(5, 1))
    c, _ = synthesise_images(labels, torch_generator(5, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    outside = torch.as_tensor(labels == 0)
    inside = ~outside
    for image in (a, c):  # scanner units, and only what the skull stripping leaves
        assert float(image[:, inside].mean()) > 20
        assert torch.isfinite(image).all()


def test_warp_keeps_label_values_and_moves_them():
    labels = torch.zeros(48, 48, 48, dtype=torch.int64)
    labels[12:36, 12:36, 12:36] = L.WM
    labels[20:28, 20:28, 20:28] = L.ENHANCING
    from nslfcore.synthesis.deformation import random_warp

    warped = random_warp(labels, torch_generator(0, 3), rotation_deg=15, scale=0.1, elastic_mm=3)
    assert set(torch.unique(warped).tolist()) <= {0, L.WM, L.ENHANCING}
    assert not torch.equal(warped, labels)
    assert abs(int((warped == L.ENHANCING).sum()) - 512) < 0.5 * 512


def test_thick_slices_keep_a_linear_ramp_and_do_nothing_at_one_millimetre():
    ramp = torch.arange(30, dtype=torch.float32).view(30, 1, 1).expand(30, 4, 5).clone()
    np.testing.assert_allclose(thick_slices(ramp, 0, 1, 0).numpy(), ramp.numpy())
    thick = thick_slices(ramp, 0, 5, 2)
    # linear between the kept slices 2, 7, ..., 27; the edges replicate the nearest kept slice
    np.testing.assert_allclose(thick[2:28].numpy(), ramp[2:28].numpy(), atol=1e-5)
    assert float(thick[0, 0, 0]) == 2.0 and float(thick[29, 0, 0]) == 27.0
    step = torch.zeros(30, 3, 3)
    step[15:] = 1
    assert 0 < float(thick_slices(step, 0, 5, 2)[14, 0, 0]) < 1  # the edge is smeared over a slice gap


def test_sequence_dropout_zeroes_exactly_one_channel():
    image = np.random.default_rng(0).uniform(0.1, 1, (4, 8, 8, 8)).astype(np.float32)
    always = RandDropSequenced("image", 1.0)
    dropped = []
    for seed in range(20):
        always.set_random_state(seed=seed)
        out = always({"image": image})["image"]
        zero = [c for c in range(4) if not out[c].any()]
        assert len(zero) == 1
        assert all(np.array_equal(out[c], image[c]) for c in range(4) if c not in zero)
        dropped += zero
    assert len(set(dropped)) == 4  # every sequence can be the missing one
    never = RandDropSequenced("image", 0.0)
    np.testing.assert_array_equal(never({"image": image})["image"], image)
    with pytest.raises(ValueError, match="sequence dropout"):
        RandDropSequenced("image", 1.5)


@pytest.mark.slow
def test_nslf_synth_writes_cases_every_command_reads(tmp_path, capsys):
    from nslfcore.cli import main
    from nslfcore.data.brats import load_case
    from nslfcore.data.discovery import find_cases
    from nslfcore.data.validation import case_problems

    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--seed", "2", "--start", "4"]) == 0
    (files,) = find_cases(tmp_path)
    assert files.name == "Synth-00004" and files.label_convention == "brats2023"
    assert case_problems(files, require_label=True) == []
    case = load_case(files)
    assert case.label is not None and set(np.unique(case.label)) <= {0, 1, 2, 3} and case.label.any()
    assert case.geometry.size == (240, 240, 155)
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--seed", "2", "--start", "4"]) == 1
    assert "already holds Synth-00004" in capsys.readouterr().out
