"""Lesion conspicuity (issue 31 point 5): the CNR formula, NAWM from T1, the fused/best ratio and its place in scoring."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from nslfcore import MODALITIES
from nslfcore.data.phantom import make_phantom, make_tiny_phantom
from nslfcore.data.transforms import brain_mask, normalize, preprocess_case
from nslfcore.metrics import conspicuity_ratio, lesion_cnr, normal_white_matter
from nslfcore.metrics.conspicuity import dilate_mm

TINY_SEEDS = (0, 1, 2)


def test_lesion_cnr_equals_a_hand_computation():
    image = np.zeros((1, 2, 4), np.float32)
    image[0, 0] = [1.0, 2.0, 3.0, 2.0]  # reference: mean 2, population std sqrt(2 / 4)
    image[0, 1] = [5.0, 7.0, 0.0, 0.0]  # lesion: mean 6
    lesion = np.zeros(image.shape, bool)
    lesion[0, 1, :2] = True
    reference = np.zeros(image.shape, bool)
    reference[0, 0] = True
    assert lesion_cnr(image, lesion, reference) == pytest.approx(4.0 / math.sqrt(0.5), rel=1e-12)
    # a darker lesion has the same CNR (absolute difference); the CNR is scale- and offset-free
    assert lesion_cnr(4.0 - image, lesion, reference) == pytest.approx(4.0 / math.sqrt(0.5), rel=1e-12)
    assert lesion_cnr(torch.from_numpy(3.0 * image + 10.0), torch.from_numpy(lesion), reference) == pytest.approx(
        4.0 / math.sqrt(0.5), rel=1e-6
    )
    # 0/1 masks count as boolean ones
    assert lesion_cnr(image, lesion.astype(np.uint8), reference.astype(np.float32)) == pytest.approx(4.0 / math.sqrt(0.5))


def test_lesion_cnr_refuses_empty_masks_and_a_constant_reference():
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    some = np.zeros(image.shape, bool)
    some[0, 0, :] = True
    with pytest.raises(ValueError, match="lesion_mask is empty"):
        lesion_cnr(image, np.zeros(image.shape, bool), some)
    with pytest.raises(ValueError, match="reference_mask is empty"):
        lesion_cnr(image, some, np.zeros(image.shape, bool))
    flat = np.ones(image.shape, np.float32)
    with pytest.raises(ValueError, match="std 0"):
        lesion_cnr(flat, some, ~some)
    with pytest.raises(ValueError, match="same shape"):
        lesion_cnr(image, some[:1], some)


def test_conspicuity_ratio_picks_the_best_source_and_skips_constant_ones():
    rng = np.random.default_rng(0)
    shape = (6, 8, 8)
    lesion = np.zeros(shape, bool)
    lesion[2:4, 2:5, 2:5] = True
    nawm = np.zeros(shape, bool)
    nawm[:, 6:, :] = True
    sources = rng.normal(0.5, 0.05, (4, *shape))
    sources[1][lesion] += 0.3  # lesion bright on source 1
    sources[2][lesion] -= 0.1  # faintly dark on source 2
    sources[3] = 0.0  # a missing sequence: constant, no CNR
    expected = [lesion_cnr(s, lesion, nawm) for s in sources[:3]]
    c = conspicuity_ratio(sources[1], sources, lesion, nawm)
    assert c["best_source"] == 1 and c["ratio"] == pytest.approx(1.0)
    assert c["cnr_sources"][:3] == pytest.approx(expected) and math.isnan(c["cnr_sources"][3])
    mean = sources[:3].mean(axis=0)
    c = conspicuity_ratio(mean, list(sources), lesion, nawm)
    assert c["ratio"] == pytest.approx(lesion_cnr(mean, lesion, nawm) / expected[1]) and c["cnr_best"] == expected[1]
    with pytest.raises(ValueError, match="no source"):
        conspicuity_ratio(mean, sources[3:], lesion, nawm)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.5)])
def test_dilate_mm_equals_a_brute_force_ball(spacing):
    rng = np.random.default_rng(1)
    shape = (9, 11, 13)
    mask = np.zeros(shape, bool)
    mask[tuple(rng.integers(2, 7, (3, 4)))] = True
    margin = 3.0
    grown = dilate_mm(mask, margin, spacing)
    step = np.array(spacing[::-1])  # (z, y, x) mm
    points = np.argwhere(mask) * step
    grid = np.array(list(itertools.product(*(range(n) for n in shape)))) * step
    nearest = np.sqrt(((grid[:, None, :] - points[None, :, :]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_array_equal(grown, (nearest <= margin + 1e-9).reshape(shape))
    np.testing.assert_array_equal(dilate_mm(mask, 0.0, spacing), mask)
    assert not dilate_mm(np.zeros(shape, bool), margin).any()


def _true_nawm(phantom, margin_mm: float = 5.0) -> np.ndarray:
    """Ground-truth NAWM: white-matter fraction > 0.5 in the brain, farther than ``margin_mm`` from the whole tumour."""
    brain = brain_mask(phantom.case.stacked())
    return (phantom.tissues["wm"] > 0.5) & brain & ~dilate_mm(phantom.case.label > 0, margin_mm)


@pytest.mark.parametrize("seed", TINY_SEEDS)
def test_the_plain_mean_hides_the_lesion_that_the_brightest_source_shows(seed):
    phantom = make_tiny_phantom(seed=seed)
    stack = phantom.case.stacked()
    sources = normalize(stack, brain_mask(stack))
    wt, nawm = phantom.case.label > 0, _true_nawm(phantom)
    assert wt.any() and nawm.sum() > 100
    signed = [(s[wt].mean() - s[nawm].mean()) / s[nawm].std() for s in sources]
    brightest = int(np.argmax(signed))  # the source where the lesion is brightest against NAWM
    mean_cnr = lesion_cnr(sources.mean(axis=0), wt, nawm)
    assert mean_cnr < 0.8 * lesion_cnr(sources[brightest], wt, nawm)
    c = conspicuity_ratio(sources.mean(axis=0), sources, wt, nawm)
    assert c["ratio"] < 0.8 and c["cnr_fused"] == pytest.approx(mean_cnr)
    # the brightest source itself keeps its own contrast
    assert conspicuity_ratio(sources[brightest], sources, wt, nawm)["ratio"] <= 1.0 + 1e-12


@pytest.fixture(scope="module")
def realistic():
    """A realistic phantom (seed 0, index 2: NCR, ED and ET) with its tissue fractions (about 11 s)."""
    return make_phantom(seed=0, index=2)


def test_nawm_from_t1_lies_in_the_true_white_matter(realistic):
    stack = realistic.case.stacked()
    brain, wt = brain_mask(stack), realistic.case.label > 0
    nawm = normal_white_matter(stack[0], brain, wt)
    wm = realistic.tissues["wm"]
    assert (wm[nawm] > 0.5).mean() > 0.9  # measured 0.965
    true = _true_nawm(realistic)
    assert (nawm & true).sum() / true.sum() > 0.3  # enough of it (measured 0.50)
    assert not (nawm & dilate_mm(wt, 5.0)).any() and not (nawm & ~brain).any()
    # the same from the normalised T1 inside the brain box (what scoring uses)
    prepared = preprocess_case(realistic.case)
    boxed = normal_white_matter(prepared.image[0], prepared.record.crop(brain), prepared.label > 0)
    assert (prepared.record.crop(wm)[boxed] > 0.5).mean() > 0.9


def test_the_bias_step_keeps_nawm_in_white_matter_under_a_strong_bias_field(realistic):
    stack = realistic.case.stacked()
    brain, wt, wm = brain_mask(stack), realistic.case.label > 0, realistic.tissues["wm"]
    z, x = (np.linspace(-1.0, 1.0, n) for n in (stack.shape[1], stack.shape[3]))
    biased = stack[0] * np.exp(0.3 * (z[:, None, None] + x[None, None, :]))  # a factor 0.55-1.8 across the head
    with_step = normal_white_matter(biased, brain, wt)
    without = normal_white_matter(biased, brain, wt, bias_sigma_mm=None)
    assert (wm[with_step] > 0.5).mean() > 0.9  # measured 0.957
    assert (wm[without] > 0.5).mean() < 0.8  # measured 0.655


def test_normal_white_matter_refuses_what_it_cannot_estimate():
    phantom = make_tiny_phantom(seed=0)
    stack = phantom.case.stacked()
    brain = brain_mask(stack)
    with pytest.raises(ValueError, match="no brain voxel"):
        normal_white_matter(stack[0], brain, brain, margin_mm=1.0)
    with pytest.raises(ValueError, match="percentiles"):
        normal_white_matter(stack[0], brain, phantom.case.label > 0, percentiles=(90.0, 80.0))


def test_score_case_reports_the_conspicuity_ratio(tmp_path):
    from nslfcore.commands.score import format_scores
    from nslfcore.compare import read_rows
    from nslfcore.evaluation import CONSPICUITY_COLUMNS, score_case, summary_markdown, write_csv

    case = make_tiny_phantom(seed=1).case
    prepared = preprocess_case(case)
    sources = prepared.record.uncrop(prepared.image)  # (4, z, y, x) on the case grid
    rows = {}
    for name, fused in (("mean", sources.mean(axis=0)), *((m, sources[i]) for i, m in enumerate(MODALITIES))):
        rows[name] = score_case(case, fused.astype(np.float32), None)
    best = max(MODALITIES, key=lambda m: float(rows[m]["cnr_fused"]))
    assert float(rows[best]["cnr_ratio"]) == pytest.approx(1.0, abs=1e-6)
    for name, row in rows.items():
        assert float(row["cnr_best"]) == pytest.approx(float(rows[best]["cnr_fused"]))
        assert float(row["cnr_ratio"]) == pytest.approx(float(row["cnr_fused"]) / float(row["cnr_best"]))
    assert float(rows["mean"]["cnr_ratio"]) < 0.8
    # no fused volume or no label: NaN columns, the same keys
    no_label = score_case(dataclasses.replace(case, label=None), sources[0], None)
    for row in (score_case(case, None, None), no_label):
        assert all(math.isnan(float(row[k])) for k in CONSPICUITY_COLUMNS)
    summary = summary_markdown([rows["mean"], rows[best]], "t")
    assert "| CNR fused / best source | CNR fused | CNR best source |" in summary
    assert f"{np.mean([float(rows['mean']['cnr_ratio']), 1.0]):.4f}" in summary
    assert "CNR" not in summary_markdown([score_case(case, None, None)], "t")
    row = rows["mean"] | {f"{r}_{m}": 0.5 for r in ("ET", "TC", "WT") for m in ("dice", "hd95", "sensitivity", "specificity")}
    assert f"lesion CNR: fused / best source {float(rows['mean']['cnr_ratio']):.3f}" in format_scores(row)
    # the per-case CSV keeps numbers only (nslf compare reads every column but the case as a float)
    (read,) = read_rows(write_csv([rows["mean"]], tmp_path / "metrics.csv"))
    assert read["cnr_ratio"] == pytest.approx(float(rows["mean"]["cnr_ratio"]))
