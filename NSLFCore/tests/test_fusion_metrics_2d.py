"""The paper's 2-D fusion metrics (FSIM, VIFP, NMI, IFC), each cross-checked against a second
implementation, the slice selection, and ``nslf evaluate --metrics-2d``."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from scipy import ndimage

from nslfcore.cli import main as nslf
from nslfcore.data.phantom import write_phantom_dataset
from nslfcore.metrics import nmi
from nslfcore.metrics.fusion_2d import fsim, fusion_metrics_2d, nmi_2d, select_axial_slices, vifp
from nslfcore.metrics.ifc import BLOCK, ifc, subband_ifc


def _pair(noise: float, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth reference (y, x) in [0, 1] and a contrast-changed, noisy copy."""
    rng = np.random.default_rng(seed)
    reference = ndimage.gaussian_filter(rng.random((size, size)), 2)
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    distorted = np.clip(0.8 * reference + 0.1 + noise * rng.standard_normal(reference.shape), 0, 1)
    return reference, distorted


# ------------------------------------------------------------------------------------------------
# FSIM: piq against an FSIM built on phasepack's phase congruency (Kovesi) and SciPy's Scharr filter


def _phase_congruency(image: np.ndarray) -> np.ndarray:
    """FSIM's PC map (energy summed over orientations / amplitude summed over orientations) from phasepack.

    ``g=0`` makes phasepack's frequency-spread weight a constant 1/2, so ``2 PC_o sumAn_o`` is the
    noise-compensated energy of orientation ``o``; FSIM's parameters (4 scales, 4 orientations,
    shortest wavelength 6, scale factor 2, sigma_f 0.55, k 2).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyfftw missing: numpy's FFT is used
        from phasepack import phasecong

        _, _, _, _, pc, eo, _ = phasecong(image, nscale=4, norient=4, minWaveLength=6, mult=2, sigmaOnf=0.55, k=2.0, g=0.0)
    amplitude = [sum(np.abs(e) for e in eo[o]) for o in range(4)]
    energy = [2.0 * pc[o] * amplitude[o] for o in range(4)]
    return sum(energy) / (sum(amplitude) + 1e-4)


def _fsim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Zhang et al. 2011's grey-level FSIM on the 0-255 scale (T1 = 0.85, T2 = 160, Scharr gradient / 16)."""
    a, b = a * 255.0, b * 255.0
    pc_a, pc_b = _phase_congruency(a), _phase_congruency(b)
    kernel = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16.0
    grad = [np.hypot(ndimage.correlate(v, kernel, mode="constant"), ndimage.correlate(v, kernel.T, mode="constant"))
            for v in (a, b)]
    s_pc = (2 * pc_a * pc_b + 0.85) / (pc_a**2 + pc_b**2 + 0.85)
    s_g = (2 * grad[0] * grad[1] + 160) / (grad[0] ** 2 + grad[1] ** 2 + 160)
    pc_m = np.maximum(pc_a, pc_b)
    return float((s_pc * s_g * pc_m).sum() / pc_m.sum())


def test_fsim_agrees_with_a_phasepack_fsim_and_ranks_distortions_alike():
    pytest.importorskip("phasepack")
    values = []
    for noise in (0.02, 0.05, 0.1):
        reference, distorted = _pair(noise)
        ours, second = fsim(distorted, reference), _fsim_reference(distorted, reference)
        assert abs(ours - second) < 0.025, (noise, ours, second)  # measured: 0.9628/0.9650, 0.9191/0.9280, 0.8409/0.8599
        values.append((ours, second))
    assert values[0][0] > values[1][0] > values[2][0] and values[0][1] > values[1][1] > values[2][1]
    reference, _ = _pair(0.0)
    assert fsim(reference, reference) == pytest.approx(1.0, abs=1e-6)
    assert fsim(*_pair(0.05)) == pytest.approx(fsim(*_pair(0.05)[::-1]), abs=1e-6)  # symmetric


# ------------------------------------------------------------------------------------------------
# VIFP: piq against sewar


def test_vifp_equals_sewar_vifp():
    sewar = pytest.importorskip("sewar.full_ref")
    for noise in (0.02, 0.1):
        reference, distorted = _pair(noise, seed=3)
        ours = vifp(distorted, reference)
        assert ours == pytest.approx(sewar.vifp(reference * 255, distorted * 255), rel=1e-6)  # measured: equal to 1e-10
        assert 0 < ours < 1
    reference, _ = _pair(0.0)
    assert vifp(reference, reference) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        vifp(reference[None], reference[None])


# ------------------------------------------------------------------------------------------------
# NMI: the project's NMI on a slice against scikit-image's


def test_nmi_2d_equals_scikit_image_and_the_3d_nmi_of_one_slice():
    from skimage.metrics import normalized_mutual_information

    reference, distorted = _pair(0.05, seed=5)
    value = nmi_2d(distorted, reference)
    assert value == pytest.approx(normalized_mutual_information(distorted, reference, bins=256), rel=1e-9)
    assert value == pytest.approx(nmi(distorted[None], reference[None]), rel=1e-12)
    assert 1 < value < 2


# ------------------------------------------------------------------------------------------------
# IFC: vectorised subband estimate against a block-by-block loop; properties of the definition


def _subband_ifc_loop(reference: np.ndarray, distorted: np.ndarray, block: int = BLOCK) -> float:
    """The GSM IFC of one subband, one block at a time (second, straightforward implementation)."""
    rows = []
    for y in range(0, reference.shape[0] - block + 1, block):
        for x in range(0, reference.shape[1] - block + 1, block):
            rows.append((reference[y : y + block, x : x + block].ravel(), distorted[y : y + block, x : x + block].ravel()))
    c = np.array([r for r, _ in rows])
    cov_u = np.cov(c.T)
    lambdas = np.clip(np.linalg.eigvalsh(cov_u), 0, None)
    inverse = np.linalg.pinv(cov_u)
    total = 0.0
    for c_i, d_i in rows:
        s2 = c_i @ inverse @ c_i / c_i.size
        var_c, var_d = np.var(c_i), np.var(d_i)
        cov = np.mean((c_i - c_i.mean()) * (d_i - d_i.mean()))
        g = max(cov / var_c, 0.0) if var_c > 1e-10 else 0.0
        sigma_v2 = max(var_d - g * cov, 1e-10)
        total += sum(0.5 * np.log2(1 + g * g * s2 * lam / sigma_v2) for lam in lambdas)
    return total


def test_subband_ifc_equals_a_block_by_block_loop():
    rng = np.random.default_rng(7)
    reference = rng.standard_normal((31, 28)) * np.linspace(0.2, 2.0, 28)  # varying scale field
    distorted = 0.7 * reference + 0.3 * rng.standard_normal(reference.shape)
    assert subband_ifc(reference, distorted) == pytest.approx(_subband_ifc_loop(reference, distorted), rel=1e-9)
    # negative gains count as none (g = 0): an inverted copy keeps only chance positive blocks (measured 4.5 vs 1133 bits)
    assert subband_ifc(reference, -distorted) < 0.01 * subband_ifc(reference, distorted)
    assert subband_ifc(reference, np.zeros_like(reference)) == 0.0


def test_ifc_falls_with_noise_and_ignores_the_contrast_of_the_distorted_image():
    pytest.importorskip("pywt")
    reference, mild = _pair(0.02, seed=1)
    _, strong = _pair(0.2, seed=1)
    assert ifc(reference, reference) > ifc(reference, mild) > ifc(reference, strong) > 0
    assert ifc(reference, 3.0 * mild) == pytest.approx(ifc(reference, mild), rel=1e-9)
    with pytest.raises(ValueError, match="2-D"):
        ifc(reference, mild[:-1])


# ------------------------------------------------------------------------------------------------
# slice selection, the per-volume average, nslf evaluate --metrics-2d


def test_select_axial_slices_is_explicit_and_evenly_spaced():
    mask = np.zeros((40, 8, 8), bool)
    for z in range(5, 35):  # brain in slices 5..34; slice 5 has 1 voxel (< 10 % of 64): left out
        mask[z, : 8 if z > 5 else 1, :8 if z > 5 else 1] = True
    assert select_axial_slices(mask, 100) == list(range(6, 35))
    picked = select_axial_slices(mask, 5)
    assert picked == [6, 13, 20, 27, 34] and picked == sorted(picked)
    assert select_axial_slices(mask, 5) == picked  # deterministic
    with pytest.raises(ValueError, match="empty"):
        select_axial_slices(np.zeros((4, 4, 4)), 3)


def test_fusion_metrics_2d_averages_over_sources_then_slices():
    rng = np.random.default_rng(2)
    sources = np.clip(ndimage.gaussian_filter(rng.random((4, 6, 48, 48)), (0, 0, 2, 2)) * 2 - 0.5, 0, 1)
    fused = sources.mean(axis=0)
    m = fusion_metrics_2d(fused, sources, [1, 4])
    expected = np.mean([[vifp(fused[z], sources[s][z]) for s in range(4)] for z in (1, 4)])
    assert m["vifp"] == pytest.approx(expected, rel=1e-12) and m["slices"] == [1, 4]
    assert m["fsim"] == pytest.approx(np.mean(m["per_source"]["fsim"]), rel=1e-12)
    assert m["ifc"] == pytest.approx(np.mean([ifc(sources[s][z], fused[z]) for s in range(4) for z in (1, 4)]), rel=1e-12)


def test_evaluate_metrics_2d_adds_columns_only_when_asked(tmp_path):
    data = tmp_path / "data"
    write_phantom_dataset(data, 1, seed=3, tiny=True)
    plain, with_2d = tmp_path / "plain", tmp_path / "with2d"
    assert nslf(["evaluate", "--data", str(data), "--model", "classical:mean", "--out", str(plain)]) == 0
    assert nslf(["evaluate", "--data", str(data), "--model", "classical:mean", "--out", str(with_2d), "--metrics-2d", "3"]) == 0
    (row_plain,) = csv.DictReader((plain / "metrics.csv").open())
    (row,) = csv.DictReader((with_2d / "metrics.csv").open())
    assert "fsim" not in row_plain and "FSIM" not in (plain / "summary.md").read_text()
    assert float(row["slices_2d"]) == 3
    assert 0 < float(row["fsim"]) <= 1 and 0 < float(row["vifp"]) and 1 < float(row["nmi_2d"]) < 2 and float(row["ifc"]) > 0
    assert row["ssim"] == row_plain["ssim"]
    summary = (with_2d / "summary.md").read_text()
    assert "| FSIM | VIFP | NMI | IFC |" in summary and "3 axial slice pairs" in summary
    assert nslf(["evaluate", "--data", str(data), "--model", "classical:mean", "--out", str(with_2d), "--metrics-2d", "0"]) == 1
