"""Classical fusion baselines (mean, max, PCA, Laplacian pyramid, guided filtering, DWT) and their scoring path."""

from __future__ import annotations

import csv
import importlib
import sys

import numpy as np
import pytest
import torch

from nslfcore.cli import main as nslf
from nslfcore.fusion_baselines import (
    FUSION_METHODS,
    ClassicalFusion,
    box_filter,
    dwt_fusion,
    fuse_classical,
    guided_filter,
    laplacian_fusion,
    laplacian_pyramid,
    max_abs,
    max_fusion,
    mean_fusion,
    pca_weights,
    reconstruct_laplacian,
)
from nslfcore.models import Network

SHAPE = (4, 16, 20, 18)


@pytest.fixture
def sources():
    """Four smooth-ish random volumes in [0, 1], (modality, z, y, x)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    volumes = gaussian_filter(rng.random(SHAPE), (0, 1, 1, 1)) + 0.3 * rng.random(SHAPE)
    volumes -= volumes.min(axis=(1, 2, 3), keepdims=True)
    return (volumes / volumes.max(axis=(1, 2, 3), keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_shape_dtype_and_range(method, sources):
    fused = fuse_classical(sources, method)
    assert fused.shape == SHAPE[1:] and fused.dtype == np.float32 and np.isfinite(fused).all()
    if method in ("mean", "max", "pca"):  # convex combinations (or the maximum) voxel by voxel
        assert (fused >= sources.min(axis=0) - 1e-6).all() and (fused <= sources.max(axis=0) + 1e-6).all()
    if method == "guided":  # clipped to the sources' overall range
        assert sources.min() <= fused.min() and fused.max() <= sources.max()


@pytest.mark.parametrize("method", sorted(FUSION_METHODS))
def test_four_identical_sources_give_that_source(method, sources):
    repeated = np.repeat(sources[:1], 4, axis=0)
    np.testing.assert_allclose(fuse_classical(repeated, method), sources[0], atol=1e-5)


def test_max_is_the_voxelwise_maximum(sources):
    np.testing.assert_array_equal(max_fusion(sources), np.max(sources, axis=0))


def test_pca_weights_sum_to_one_and_favour_the_largest_variance():
    rng = np.random.default_rng(1)
    spread = np.array([0.02, 0.05, 0.03, 0.2])  # modality 4 varies most; all independent
    volumes = (0.5 + spread[:, None, None, None] * rng.standard_normal(SHAPE)).clip(0.01, 1).astype(np.float32)
    weights = pca_weights(volumes)
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert weights.argmax() == 3 and weights[3] > 0.9
    # Only brain voxels (any source > 0) count: zero background added around them changes nothing.
    padded = np.pad(volumes, ((0, 0), (4, 4), (4, 4), (4, 4)))
    np.testing.assert_allclose(pca_weights(padded), weights, atol=1e-12)


def test_laplacian_pyramid_reconstructs_exactly(sources):
    pyramid = laplacian_pyramid(sources[2], 2)
    assert [level.shape for level in pyramid] == [(16, 20, 18), (8, 10, 9), (4, 5, 5)]
    np.testing.assert_allclose(reconstruct_laplacian(pyramid), sources[2], atol=1e-6)


def test_laplacian_keeps_the_strongest_detail():
    # One source has a bright cube, the others are flat at the same mean level: the cube's edges are
    # the largest detail coefficients, so the fused volume keeps much more of its contrast than the mean.
    volumes = np.full((4, 16, 16, 16), 0.2, np.float32)
    volumes[0, 6:10, 6:10, 6:10] = 1.0
    fused = laplacian_fusion(volumes)
    contrast = fused[6:10, 6:10, 6:10].mean() - fused[:3].mean()
    assert contrast > 1.5 * (volumes[0, 6:10, 6:10, 6:10].mean() - 0.2) / 4
    assert laplacian_fusion(volumes[:, :3, :5, :4]).shape == (3, 5, 4)  # too small for a level: the mean


def test_max_abs_keeps_the_signed_entry_of_largest_magnitude():
    stack = np.array([[0.5, -3.0, 1.0], [-0.7, 2.0, 1.0]])
    np.testing.assert_array_equal(max_abs(stack), [-0.7, -3.0, 1.0])


def test_dwt_reconstructs_identical_sources_perfectly(sources):
    volume = sources[1, :15, :19, :17]  # odd sizes: symmetric extension, cut back to the shape
    fused = dwt_fusion(np.repeat(volume[None], 4, axis=0), levels=3)
    np.testing.assert_allclose(fused, volume, atol=1e-6)
    assert np.abs(dwt_fusion(sources) - mean_fusion(sources)).max() > 0.05  # the details are not averaged


def test_dwt_keeps_the_strongest_detail_of_each_source():
    # Source 0 has a bright cube, source 2 a dark one elsewhere; all else is flat at 0.5. Each cube's
    # edges are the largest detail coefficients where it lies, so each keeps most of its own contrast,
    # where the mean keeps a quarter.
    volumes = np.full((4, 24, 24, 24), 0.5, np.float32)
    volumes[0, 4:10, 4:10, 4:10] = 1.0
    volumes[2, 14:20, 14:20, 14:20] = 0.0
    fused = dwt_fusion(volumes)
    bright, dark, flat = fused[5:9, 5:9, 5:9].mean(), fused[15:19, 15:19, 15:19].mean(), fused[:, 12:, :8].mean()
    assert flat == pytest.approx(0.5, abs=0.02)
    assert bright - flat > 0.5 * 0.5 and flat - dark > 0.5 * 0.5  # the mean: 0.125 each
    assert dwt_fusion(volumes[:, :3, :5, :4]).shape == (3, 5, 4)  # too small for a level: the mean


def test_nslfcore_imports_without_the_baselines_extra_and_names_it(monkeypatch):
    for module in ("pywt", "skimage", "skimage.transform"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "nslfcore.fusion_baselines")
    module = importlib.import_module("nslfcore.fusion_baselines")
    assert module.fuse_classical(np.ones((4, 2, 2, 2)), "mean").shape == (2, 2, 2)
    for method, package in (("dwt", "PyWavelets"), ("laplacian", "scikit-image")):
        with pytest.raises(ImportError, match=rf"{package}.*nslfcore\[baselines\]"):
            module.ClassicalFusion(method)


def test_guided_filter_preserves_edges_where_a_box_filter_blurs():
    step = np.zeros((6, 8, 16))
    step[..., 8:] = 1.0
    guided = guided_filter(step, step, radius=3, eps=1e-4)
    box = box_filter(step, 3)
    assert np.abs(guided - step).max() < 0.02  # the edge of the guide is kept
    assert np.abs(box - step)[..., 7:9].min() > 0.3  # the box filter smears it over its radius
    flat = guided_filter(np.ones_like(step), step, radius=3, eps=1e-4)  # a flat guide: plain smoothing
    np.testing.assert_allclose(flat, box_filter(box_filter(step, 3), 3), atol=1e-9)


def test_classical_fusion_is_a_fusion_only_network(sources):
    net = ClassicalFusion("pca")
    assert isinstance(net, Network) and net.fuses and not net.segments
    x = torch.from_numpy(np.stack([sources, sources[::-1].copy()]))
    fused, logits = net.predict(x)
    assert logits is None and fused is not None and fused.shape == (2, 1, *SHAPE[1:])
    np.testing.assert_allclose(fused[1, 0].numpy(), fuse_classical(sources[::-1], "pca"), atol=1e-6)
    with pytest.raises(ValueError, match="Unknown fusion method"):
        ClassicalFusion("wavelet")
    with pytest.raises(ValueError, match="no weights"):
        net.checkpoint_fields()


def test_inference_runs_a_method_on_the_preprocessed_brain_box(tiny_case):
    from nslfcore.data.brats import find_cases, load_case
    from nslfcore.data.transforms import brain_mask, preprocess_case
    from nslfcore.fusion_baselines import mean_fusion
    from nslfcore.inference import fuse

    case = load_case(find_cases(tiny_case.parent)[0])
    result = fuse(case, ClassicalFusion("mean"), device="cpu", mode="auto")
    assert result.mode == "whole" and result.fused is not None
    prepared = preprocess_case(case)
    inside = brain_mask(prepared.record.crop(case.stacked()))
    expected = np.where(inside, mean_fusion(prepared.image), 0)
    np.testing.assert_allclose(prepared.record.crop(result.fused), expected, atol=1e-6)


def test_nslf_evaluate_scores_a_classical_method(tiny_case, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--data", str(tiny_case.parent), "--model", "classical:laplacian", "--out", str(out)]
    assert nslf([*args, "--device", "cpu"]) == 0
    (row,) = list(csv.DictReader((out / "metrics.csv").open()))
    assert 0 < float(row["ssim"]) <= 1 and float(row["psnr"]) > 0 and float(row["nmi"]) >= 1
    assert not any(key.endswith("_dice") for key in row)
    summary = (out / "summary.md").read_text()
    assert "classical:laplacian on" in summary and "classical:laplacian does not segment." in summary
    assert nslf(["evaluate", "--data", str(tiny_case.parent), "--model", "classical:nope", "--out", str(out)]) == 1
