"""nslfcore.metrics against independent implementations (scikit-image, MONAI, scipy) and hand counts.

Volumes are (z, y, x); spacing is ITK (x, y, z) mm. Everything is small so the file runs in seconds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage
from skimage.metrics import normalized_mutual_information, peak_signal_noise_ratio, structural_similarity

from nslfcore import metrics as M
from nslfcore.data.labels import REGIONS

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI-internal

SHAPE = (13, 17, 21)  # (z, y, x), every size >= the SSIM window, all different to catch axis mix-ups


# --------------------------------------------------------------------------------------------------
# volumes


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _ball(shape, centre, radius, spacing_zyx=(1.0, 1.0, 1.0)) -> np.ndarray:
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_zyx)) <= radius**2


def _smooth_noise(seed: int, shape=SHAPE, sigma: float = 2.0) -> np.ndarray:
    v = ndimage.gaussian_filter(_rng(seed).standard_normal(shape), sigma)
    return (v - v.min()) / (v.max() - v.min())


def _image_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(fused-like, source-like) float64 pairs in [0, 1]: random, smoothed noise, shapes + noise."""
    rng = _rng(1)
    uniform = rng.random(SHAPE)
    noisy = np.clip(uniform + 0.2 * rng.standard_normal(SHAPE), 0, 1)
    smooth_a, smooth_b = _smooth_noise(2), _smooth_noise(3)
    smooth_mix = 0.7 * smooth_a + 0.3 * smooth_b
    cube = np.zeros(SHAPE)
    cube[3:10, 4:12, 5:16] = 0.8
    sphere = 0.6 * _ball(SHAPE, (6, 8, 10), 5.5) + 0.05 * rng.random(SHAPE)
    return {
        "random": (uniform, noisy),
        "smooth": (smooth_mix, smooth_a),
        "shapes": (ndimage.gaussian_filter(cube, 1.0), sphere),
        "uncorrelated": (uniform, smooth_b),
    }


PAIRS = _image_pairs()


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, win_size=11
    )


# --------------------------------------------------------------------------------------------------
# SSIM


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_ssim_equals_skimage(name):
    a, b = PAIRS[name]
    assert M.ssim(a, b) == pytest.approx(_skimage_ssim(a, b), abs=1e-10)
    assert M.ssim(b, a) == pytest.approx(M.ssim(a, b), abs=1e-12)


def test_ssim_identical_is_one_and_accepts_torch():
    a, b = PAIRS["smooth"]
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    from_torch = M.ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    assert from_torch == pytest.approx(_skimage_ssim(a.astype(np.float32).astype(np.float64), b.astype(np.float32)), abs=1e-9)


def test_ssim_constant_offset_only_changes_luminance_term():
    # Constant volumes: variances and covariance 0, so SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    a, b = np.full(SHAPE, 0.2), np.full(SHAPE, 0.5)
    c1 = 0.01**2
    assert M.ssim(a, b) == pytest.approx((2 * 0.2 * 0.5 + c1) / (0.2**2 + 0.5**2 + c1), rel=1e-12)


def test_ssim_rejects_volume_smaller_than_window():
    with pytest.raises(ValueError, match="win_size"):
        M.ssim(np.zeros((10, 20, 20)), np.zeros((10, 20, 20)))
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(np.zeros((11, 12, 13)), np.zeros((11, 13, 12)))


# --------------------------------------------------------------------------------------------------
# PSNR


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_psnr_equals_skimage(name):
    a, b = PAIRS[name]
    assert M.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), abs=1e-10)


def test_psnr_by_hand_and_identical():
    a = np.zeros((4, 4, 4))
    b = np.full((4, 4, 4), 0.1)  # MSE 0.01 -> 10 log10(100) = 20 dB
    assert M.psnr(a, b) == pytest.approx(20.0, abs=1e-12)
    b[0, 0, 0] = 0.1 + math.sqrt(0.63)  # MSE (63 * 0.01 + (0.1 + sqrt(.63))^2) / 64
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(64 / (0.63 + (0.1 + math.sqrt(0.63)) ** 2)), abs=1e-12)
    assert M.psnr(a, a) == math.inf


# --------------------------------------------------------------------------------------------------
# NMI


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_nmi_equals_skimage(name):
    a, b = PAIRS[name]
    assert M.nmi(a, b) == pytest.approx(normalized_mutual_information(a, b, bins=256), abs=1e-12)
    # skimage bins each image over its own [min, max]: a rescaled image gives the same bins.
    assert M.nmi(3 * a + 2, b) == pytest.approx(normalized_mutual_information(3 * a + 2, b, bins=256), abs=1e-12)


def test_nmi_float32_and_torch_follow_skimage_binning():
    a, b = PAIRS["random"]
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    expected = normalized_mutual_information(a32, b32, bins=256)
    assert M.nmi(a32, b32) == pytest.approx(expected, abs=1e-7)
    assert M.nmi(torch.from_numpy(a32), torch.from_numpy(b32)) == M.nmi(a32, b32)


def test_nmi_by_hand():
    # A: x < 2 -> 0 else 1; B: y < 2 -> 0 else 1, on 4x4x4: independent, each cell of the 2x2 joint
    # histogram holds 1/4 -> H(A) = H(B) = ln 2, H(A,B) = ln 4: NMI 1, MI 0, Q_MI 0.
    z, y, x = np.meshgrid(*(np.arange(4),) * 3, indexing="ij")
    a, b = (x >= 2).astype(float), (y >= 2).astype(float)
    assert M.nmi(a, b) == pytest.approx(1.0, abs=1e-12)
    assert M.nmi(a, b, method="hossny") == pytest.approx(0.0, abs=1e-12)
    # Identical binary images: H(A,B) = H(A) -> NMI 2, Q_MI 1.
    assert M.nmi(a, a) == pytest.approx(2.0, abs=1e-12)
    assert M.nmi(a, a, method="hossny") == pytest.approx(1.0, abs=1e-12)
    # A quarter of the voxels set in both (x>=2 and y>=2): A has p = (1/2, 1/2), C = (3/4, 1/4),
    # joint (A, C) = {(0,0): 1/2, (1,0): 1/4, (1,1): 1/4}.
    c = ((x >= 2) & (y >= 2)).astype(float)
    h_a, h_c = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_ac = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert M.nmi(a, c) == pytest.approx((h_a + h_c) / h_ac, abs=1e-12)
    assert M.nmi(a, c, method="hossny") == pytest.approx(2 * (h_a + h_c - h_ac) / (h_a + h_c), abs=1e-12)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_hossny_is_two_mi_over_entropy_sum(name):
    a, b = PAIRS[name]
    # Independent: entropies from a 256-bin joint histogram built with np.digitize on the same edges.
    edges_a = np.linspace(a.min(), a.max(), 257)
    edges_b = np.linspace(b.min(), b.max(), 257)
    ia = np.clip(np.digitize(a.ravel(), edges_a) - 1, 0, 255)
    ib = np.clip(np.digitize(b.ravel(), edges_b) - 1, 0, 255)
    joint = np.zeros((256, 256))
    np.add.at(joint, (ia, ib), 1)
    p = joint / joint.sum()

    def h(q):
        q = q[q > 0]
        return -(q * np.log2(q)).sum()

    h_a, h_b, h_ab = h(p.sum(1)), h(p.sum(0)), h(p.ravel())
    assert M.nmi(a, b, method="hossny") == pytest.approx(2 * (h_a + h_b - h_ab) / (h_a + h_b), abs=1e-12)


def test_nmi_unknown_method():
    with pytest.raises(ValueError, match="hossny"):
        M.nmi(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), method="mi")


# --------------------------------------------------------------------------------------------------
# spatial frequency and SFR


def _sf_loops(v: np.ndarray) -> float:
    """Independent, literal 3-D SF: loops over voxels; diagonals in (y, x) planes weighted 1/sqrt 2."""
    nz, ny, nx = v.shape
    rf = cf = slf = md = sd = 0.0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if x >= 1:
                    rf += (v[z, y, x] - v[z, y, x - 1]) ** 2
                if y >= 1:
                    cf += (v[z, y, x] - v[z, y - 1, x]) ** 2
                if z >= 1:
                    slf += (v[z, y, x] - v[z - 1, y, x]) ** 2
                if y >= 1 and x >= 1:
                    md += (v[z, y, x] - v[z, y - 1, x - 1]) ** 2
                if y >= 1 and x + 1 < nx:
                    sd += (v[z, y, x] - v[z, y - 1, x + 1]) ** 2
    n = v.size
    return math.sqrt((rf + cf + slf) / n + (md + sd) / math.sqrt(2) / n)


def _zheng_2d(im: np.ndarray) -> float:
    """Zheng et al. 2007 SF of a 2-D image (rows i, columns j), written from the paper's equations."""
    m, n = im.shape
    rf = sum((im[i, j] - im[i, j - 1]) ** 2 for i in range(m) for j in range(1, n)) / (m * n)
    cf = sum((im[i, j] - im[i - 1, j]) ** 2 for i in range(1, m) for j in range(n)) / (m * n)
    mdf = sum((im[i, j] - im[i - 1, j - 1]) ** 2 for i in range(1, m) for j in range(1, n)) / (m * n) / math.sqrt(2)
    sdf = sum((im[i, j] - im[i - 1, j + 1]) ** 2 for i in range(1, m) for j in range(n - 1)) / (m * n) / math.sqrt(2)
    return math.sqrt(rf + cf + mdf + sdf)


def test_spatial_frequency_of_ramps_by_hand():
    # x-ramp 0, 1, 2 on (z, y, x) = (2, 2, 3): 8 x-pairs with difference 1; 4 main- and 4
    # secondary-diagonal pairs with |difference| 1; none along y or z. N = 12.
    ramp_x = np.broadcast_to(np.arange(3.0), (2, 2, 3))
    assert M.spatial_frequency(ramp_x) == pytest.approx(math.sqrt((8 + 8 / math.sqrt(2)) / 12), abs=1e-12)
    # z-ramp 0, 2, 4 on (3, 2, 2): 8 z-pairs with difference 2 -> SF^2 = 32 / 12; diagonals stay in-plane.
    ramp_z = np.broadcast_to((2.0 * np.arange(3))[:, None, None], (3, 2, 2))
    assert M.spatial_frequency(ramp_z) == pytest.approx(math.sqrt(32 / 12), abs=1e-12)
    # y-ramp 0, 1 on (1, 2, 2): 2 y-pairs (1), 1 main diagonal (1), 1 secondary diagonal (1); N = 4.
    ramp_y = np.broadcast_to(np.arange(2.0)[:, None], (1, 2, 2))
    assert M.spatial_frequency(ramp_y) == pytest.approx(math.sqrt((2 + 2 / math.sqrt(2)) / 4), abs=1e-12)
    assert M.spatial_frequency(np.full((3, 4, 5), 0.7)) == 0.0


def test_spatial_frequency_single_slice_is_zhengs_2d_sf():
    im = _rng(4).random((6, 7))
    assert M.spatial_frequency(im[None]) == pytest.approx(_zheng_2d(im), abs=1e-12)


@pytest.mark.parametrize("name", ["random", "shapes"])
def test_spatial_frequency_equals_loops(name):
    v = PAIRS[name][0][:5, :6, :7]
    assert M.spatial_frequency(v) == pytest.approx(_sf_loops(v), abs=1e-12)
    assert M.spatial_frequency(torch.from_numpy(v)) == pytest.approx(_sf_loops(v), abs=1e-12)


def _sfr_loops(fused: np.ndarray, sources: list[np.ndarray]) -> float:
    """Independent SFR: reference gradient per direction = max over sources of |first difference|."""
    nz, ny, nx = fused.shape
    steps = {(0, 0, 1): 1.0, (0, 1, 0): 1.0, (1, 0, 0): 1.0, (0, 1, 1): 1 / math.sqrt(2), (0, 1, -1): 1 / math.sqrt(2)}
    total = 0.0
    for (dz, dy, dx), w in steps.items():
        for z in range(dz, nz):
            for y in range(dy, ny):
                for x in range(nx):
                    if not 0 <= x - dx < nx:
                        continue
                    g = max(abs(s[z, y, x] - s[z - dz, y - dy, x - dx]) for s in sources)
                    total += w * g * g
    sf_r = math.sqrt(total / fused.size)
    return _sf_loops(fused) / sf_r


def test_sfr_by_hand():
    # Sources: x-ramp A (steps 1) and y-ramp B (steps 2) on (2, 3, 3). Reference gradients:
    # x: max(1, 0) = 1 on 2*3*2 = 12 pairs; y: max(0, 2) = 2 on 12 pairs; z: 0;
    # main diagonal: max(1, 2) = 2 on 2*2*2 = 8 pairs; secondary: max(|-1|, 2) = 2 on 8 pairs. N = 18.
    z, y, x = np.meshgrid(np.arange(2.0), np.arange(3.0), np.arange(3.0), indexing="ij")
    a, b = x, 2 * y
    sf_r = math.sqrt((12 * 1 + 12 * 4 + (8 * 4 + 8 * 4) / math.sqrt(2)) / 18)
    # Fused = A: SF_A^2 = (12 + (8 + 8) / sqrt 2) / 18.
    sf_a = math.sqrt((12 + 16 / math.sqrt(2)) / 18)
    assert M.spatial_frequency(a) == pytest.approx(sf_a, abs=1e-12)
    assert M.spatial_frequency_ratio(a, [a, b]) == pytest.approx(sf_a / sf_r, abs=1e-12)
    assert M.spatial_frequency_ratio(a, np.stack([a, b])) == pytest.approx(sf_a / sf_r, abs=1e-12)
    # One source, fused equal to it: SFR 1 (rSFe 0); doubled contrast: SFR 2 (over-fused).
    assert M.spatial_frequency_ratio(b, [b]) == pytest.approx(1.0, abs=1e-12)
    assert M.spatial_frequency_ratio(2 * b, [b]) == pytest.approx(2.0, abs=1e-12)
    # Constant sources: 1 for a constant fused volume, inf otherwise.
    flat = np.full(a.shape, 0.3)
    assert M.spatial_frequency_ratio(flat, [flat, flat]) == 1.0
    assert M.spatial_frequency_ratio(a, [flat]) == math.inf


def test_sfr_equals_loops_on_random_and_structured_volumes():
    sources = [PAIRS["random"][0][:5, :6, :7], PAIRS["smooth"][1][:5, :6, :7], PAIRS["shapes"][1][:5, :6, :7]]
    for fused in (np.mean(sources, axis=0), np.max(sources, axis=0), PAIRS["shapes"][0][:5, :6, :7]):
        assert M.spatial_frequency_ratio(fused, sources) == pytest.approx(_sfr_loops(fused, sources), abs=1e-12)
    # The average of sources is smoother than the sharpest of them: under-fused.
    assert M.spatial_frequency_ratio(np.mean(sources, axis=0), sources) < 1


# --------------------------------------------------------------------------------------------------
# fusion_metrics


def _fusion_case() -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(5)
    sources = np.stack([_smooth_noise(10 + i, sigma=1.0 + 0.5 * i) for i in range(4)])
    sources[1] = np.clip(sources[1] + 0.5 * _ball(SHAPE, (6, 8, 10), 4.0), 0, 1)
    weights = rng.random(4)
    fused = np.tensordot(weights / weights.sum(), sources, axes=1)
    return fused, sources


def test_fusion_metrics_means_and_per_source():
    fused, sources = _fusion_case()
    m = M.fusion_metrics(fused, sources)
    assert set(m) == {"ssim", "psnr", "nmi", "sfr", "sf_fused", "sf_reference", "nmi_method", "per_source"}
    assert set(m["per_source"]) == {"ssim", "psnr", "nmi"}
    expected = {
        "ssim": [_skimage_ssim(fused, s) for s in sources],
        "psnr": [peak_signal_noise_ratio(s, fused, data_range=1.0) for s in sources],
        "nmi": [normalized_mutual_information(fused, s, bins=256) for s in sources],
    }
    for name, values in expected.items():
        assert m["per_source"][name] == pytest.approx(values, abs=1e-10)
        assert m[name] == pytest.approx(np.mean(values), abs=1e-10)
    assert m["nmi_method"] == "studholme"
    assert m["sfr"] == pytest.approx(_sfr_loops(fused, list(sources)), abs=1e-10)
    assert m["sfr"] == pytest.approx(m["sf_fused"] / m["sf_reference"], abs=1e-12)
    assert m["sfr"] == pytest.approx(M.spatial_frequency_ratio(fused, sources), abs=1e-12)
    assert m["sf_fused"] == pytest.approx(M.spatial_frequency(fused), abs=1e-12)
    assert 0 < m["ssim"] < 1 and 1 < m["nmi"] < 2 and m["sfr"] < 1  # a weighted mean is under-fused


def test_fusion_metrics_torch_and_sequence_inputs_and_hossny():
    fused, sources = _fusion_case()
    m = M.fusion_metrics(fused, sources)
    from_torch = M.fusion_metrics(torch.from_numpy(fused), torch.from_numpy(sources))
    from_list = M.fusion_metrics(fused, list(sources))
    for other in (from_torch, from_list):
        for name in ("ssim", "psnr", "nmi", "sfr"):
            assert other[name] == pytest.approx(m[name], abs=1e-12)
    hossny = M.fusion_metrics(fused, sources, nmi_method="hossny")
    assert hossny["nmi_method"] == "hossny"
    assert hossny["per_source"]["nmi"] == pytest.approx([2 - 2 / v for v in m["per_source"]["nmi"]], abs=1e-12)
    assert hossny["ssim"] == m["ssim"]


def test_fusion_metrics_identical_source_gives_infinite_psnr():
    fused, sources = _fusion_case()
    m = M.fusion_metrics(sources[2], sources)
    assert m["per_source"]["psnr"][2] == math.inf and m["psnr"] == math.inf
    assert m["per_source"]["ssim"][2] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="source 1"):
        M.fusion_metrics(fused, [sources[0], sources[1][:-1]])


# --------------------------------------------------------------------------------------------------
# overlap metrics


def _hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4x4x4 masks with TP 6, FP 2, FN 4, TN 52; brain = z < 2 holds TP 4, FP 0, FN 4, TN 24."""
    pred = np.zeros((4, 4, 4), bool)
    ref = np.zeros((4, 4, 4), bool)
    pred[0, 0, :] = ref[0, 0, :] = True  # TP 4 (brain)
    pred[2, 0, :2] = ref[2, 0, :2] = True  # TP 2
    ref[1, 1, :] = True  # FN 4 (brain)
    pred[3, 3, :2] = True  # FP 2
    brain = np.zeros((4, 4, 4), bool)
    brain[:2] = True
    return pred, ref, brain


def test_overlap_metrics_by_hand():
    pred, ref, brain = _hand_case()
    m = M.overlap_metrics(pred, ref)
    assert m == pytest.approx(
        {"dice": 12 / 18, "jaccard": 6 / 12, "sensitivity": 6 / 10, "specificity": 52 / 54, "accuracy": 58 / 64},
        abs=1e-15,
    )
    inside = M.overlap_metrics(pred, ref, roi=brain)
    assert inside == pytest.approx(
        {"dice": 8 / 12, "jaccard": 4 / 8, "sensitivity": 4 / 8, "specificity": 1.0, "accuracy": 28 / 32}, abs=1e-15
    )
    with pytest.raises(ValueError, match="brain mask is empty"):
        M.overlap_metrics(pred, ref, roi=np.zeros_like(brain))


def test_overlap_metrics_empty_conventions():
    empty = np.zeros((4, 4, 4), bool)
    some = empty.copy()
    some[1, 1, 1:3] = True
    full = np.ones((4, 4, 4), bool)
    both_empty = M.overlap_metrics(empty, empty)
    assert both_empty == {"dice": 1.0, "jaccard": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0}
    missed = M.overlap_metrics(empty, some)  # reference only
    assert (missed["dice"], missed["jaccard"], missed["sensitivity"], missed["specificity"]) == (0.0, 0.0, 0.0, 1.0)
    false_alarm = M.overlap_metrics(some, empty)  # prediction only
    assert (false_alarm["dice"], false_alarm["jaccard"], false_alarm["sensitivity"]) == (0.0, 0.0, 0.0)
    assert false_alarm["specificity"] == pytest.approx(62 / 64) and false_alarm["accuracy"] == pytest.approx(62 / 64)
    assert M.overlap_metrics(full, full)["specificity"] == 1.0  # no reference negatives, none predicted
    assert M.overlap_metrics(some, full)["specificity"] == 0.0  # no reference negatives, some predicted


@pytest.mark.parametrize("seed", [0, 1])
def test_dice_equals_monai(seed):
    rng = _rng(seed)
    pred = ndimage.gaussian_filter(rng.random((12, 14, 16)), 1.5) > 0.5
    ref = ndimage.gaussian_filter(rng.random((12, 14, 16)), 1.5) > 0.5
    expected = float(compute_dice(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()))
    assert M.overlap_metrics(pred, ref)["dice"] == pytest.approx(expected, abs=1e-6)
    assert M.overlap_metrics(torch.from_numpy(pred), torch.from_numpy(ref))["dice"] == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# HD95


def _hd95_scipy(pred: np.ndarray, ref: np.ndarray, spacing_xyz) -> float:
    """Independent HD95: surface = mask minus its erosion, distances by the EDT with (z, y, x) sampling."""
    sampling = tuple(reversed(spacing_xyz))
    surface_p = pred & ~ndimage.binary_erosion(pred)
    surface_r = ref & ~ndimage.binary_erosion(ref)
    to_r = ndimage.distance_transform_edt(~surface_r, sampling=sampling)[surface_p]
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=sampling)[surface_r]
    return max(np.percentile(to_r, 95), np.percentile(to_p, 95))


def _monai_hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx) -> float:
    t = lambda m: torch.from_numpy(m)[None, None].float()  # noqa: E731
    return float(compute_hausdorff_distance(t(pred), t(ref), include_background=True, percentile=95, spacing=list(spacing_zyx)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 2.5), (3.0, 1.0, 0.5)])
def test_hd95_equals_monai_and_scipy_with_anisotropic_spacing(spacing):
    shape = (14, 16, 18)
    spacing_zyx = tuple(reversed(spacing))
    pairs = [
        (_ball(shape, (6, 7, 8), 4.5), _ball(shape, (7, 8, 10), 5.0)),
        (
            ndimage.gaussian_filter(_rng(7).random(shape), 1.5) > 0.52,
            ndimage.gaussian_filter(_rng(8).random(shape), 1.5) > 0.5,
        ),
    ]
    for pred, ref in pairs:
        value = M.hd95(pred, ref, spacing)
        assert value == pytest.approx(_monai_hd95(pred, ref, spacing_zyx), abs=1e-5)
        assert value == pytest.approx(_hd95_scipy(pred, ref, spacing), abs=1e-4)
    assert M.hd95(pairs[0][0], pairs[0][0], spacing) == 0.0


def test_hd95_planes_offset_along_z_scale_with_z_spacing_only():
    # Two one-voxel-thick planes z = 2 and z = 4: every surface voxel is 2 slices from the other.
    a = np.zeros((7, 5, 6), bool)
    b = np.zeros((7, 5, 6), bool)
    a[2], b[4] = True, True
    assert M.hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(2.0, abs=1e-6)
    assert M.hd95(a, b, (1.0, 1.0, 3.0)) == pytest.approx(6.0, abs=1e-6)  # (x, y, z): z is 3 mm
    assert M.hd95(a, b, (3.0, 1.0, 1.0)) == pytest.approx(2.0, abs=1e-6)  # x spacing is irrelevant


def test_hd95_cubes_offset_along_z_are_three_times_farther_with_3mm_slices():
    # Slabs spanning the whole (y, x) plane: the nearest surface voxel of the other cube is always
    # straight along z, so every distance, and HD95, scales with the z spacing.
    a = np.zeros((12, 6, 7), bool)
    b = np.zeros((12, 6, 7), bool)
    a[1:5], b[6:11] = True, True
    iso = M.hd95(a, b, (1.0, 1.0, 1.0))
    assert iso > 1
    assert M.hd95(a, b, (1.0, 1.0, 3.0)) == pytest.approx(3 * iso, abs=1e-5)
    assert M.hd95(a, b, (2.0, 2.0, 1.0)) == pytest.approx(iso, abs=1e-5)
    # Small cubes, offset by 3 slices: compared with the independent EDT version.
    c = np.zeros((14, 9, 9), bool)
    d = np.zeros((14, 9, 9), bool)
    c[2:6, 2:6, 2:6], d[5:9, 2:6, 2:6] = True, True
    assert M.hd95(c, d, (1.0, 1.0, 3.0)) == pytest.approx(_hd95_scipy(c, d, (1.0, 1.0, 3.0)), abs=1e-4)


def test_hd95_empty_conventions():
    empty = np.zeros((6, 6, 6), bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI empty-mask warnings: the conventions come first
        assert M.hd95(empty, empty) == 0.0
        assert M.hd95(empty, some) == M.HD95_EMPTY == 374.0
        assert M.hd95(some, empty) == 374.0
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(some, some, (1.0, 1.0))


# --------------------------------------------------------------------------------------------------
# segmentation_metrics


def _label_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference and prediction (z, y, x) label maps: edema shell, core, enhancing rim; brain ball."""
    shape = (16, 18, 20)
    ref = np.zeros(shape, np.uint8)
    ref[_ball(shape, (8, 9, 10), 6.5)] = 2
    ref[_ball(shape, (8, 9, 10), 4.5)] = 3
    ref[_ball(shape, (8, 9, 10), 2.5)] = 1
    pred = np.zeros(shape, np.uint8)
    pred[_ball(shape, (8, 10, 11), 6.0)] = 2
    pred[_ball(shape, (9, 10, 11), 4.0)] = 3
    pred[_ball(shape, (9, 10, 10), 3.0)] = 1
    noise = _rng(seed).random(shape) < 0.01
    pred[noise] = 3
    brain = _ball(shape, (8, 9, 10), 8.0)
    return pred, ref, brain


def test_segmentation_metrics_regions_and_keys():
    pred, ref, brain = _label_maps()
    spacing = (1.0, 1.2, 2.0)
    result = M.segmentation_metrics(pred, ref, spacing=spacing, brain_mask=brain)
    assert set(result) == {"ET", "TC", "WT"}
    base = {"dice", "jaccard", "sensitivity", "specificity", "accuracy", "hd95"}
    brain_keys = {"dice_brain", "sensitivity_brain", "specificity_brain", "accuracy_brain"}
    for region, labels in REGIONS.items():
        assert set(result[region]) == base | brain_keys
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        monai_dice = float(compute_dice(torch.from_numpy(p)[None, None].float(), torch.from_numpy(r)[None, None].float()))
        assert result[region]["dice"] == pytest.approx(monai_dice, abs=1e-6)
        assert result[region]["hd95"] == pytest.approx(_monai_hd95(p, r, tuple(reversed(spacing))), abs=1e-5)
        tp, fp = np.sum(p & r), np.sum(p & ~r)
        fn, tn = np.sum(~p & r), np.sum(~p & ~r)
        assert result[region]["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-12)
        assert result[region]["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert result[region]["accuracy"] == pytest.approx((tp + tn) / p.size, abs=1e-12)
        assert result[region]["jaccard"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
        tn_b, fp_b = np.sum(~p & ~r & brain), np.sum(p & ~r & brain)
        assert result[region]["specificity_brain"] == pytest.approx(tn_b / (tn_b + fp_b), abs=1e-12)
        assert result[region]["specificity_brain"] < result[region]["specificity"]  # air is easy
    assert set(M.segmentation_metrics(pred, ref)["WT"]) == base  # no brain mask, no *_brain keys


def test_segmentation_metrics_torch_input_and_empty_regions():
    pred, ref, _ = _label_maps()
    assert M.segmentation_metrics(torch.from_numpy(pred), torch.from_numpy(ref)) == M.segmentation_metrics(pred, ref)
    ref_no_et = np.where(ref == 3, 1, ref).astype(np.uint8)  # no ET in the reference
    pred_no_tumour = np.zeros_like(pred)
    et = M.segmentation_metrics(pred_no_tumour, ref_no_et)["ET"]  # both empty
    assert (et["dice"], et["jaccard"], et["sensitivity"], et["hd95"]) == (1.0, 1.0, 1.0, 0.0)
    wt = M.segmentation_metrics(pred_no_tumour, ref_no_et)["WT"]  # prediction empty
    assert (wt["dice"], wt["sensitivity"], wt["hd95"]) == (0.0, 0.0, 374.0)
    et_fp = M.segmentation_metrics(pred, ref_no_et)["ET"]  # reference empty, prediction not
    assert (et_fp["dice"], et_fp["sensitivity"], et_fp["hd95"]) == (0.0, 0.0, 374.0)


def test_segmentation_metrics_rejects_file_labels_and_bad_shapes():
    pred, ref, brain = _label_maps()
    with pytest.raises(ValueError, match="to_internal"):
        M.segmentation_metrics(np.where(pred == 3, 4, pred), ref)
    with pytest.raises(ValueError, match="brain mask"):
        M.segmentation_metrics(pred, ref, brain_mask=brain[:-1])
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        M.segmentation_metrics(pred[0], ref[0])
