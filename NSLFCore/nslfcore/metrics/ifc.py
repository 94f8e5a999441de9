"""Information fidelity criterion (IFC) of Sheikh, Bovik & de Veciana (2005), on a wavelet decomposition.

Sheikh, H. R., Bovik, A. C. and de Veciana, G., "An information fidelity criterion for image
quality assessment using natural scene statistics", IEEE Transactions on Image Processing 14(12):
2117-2128, 2005. The paper's model, per subband ``k`` of a multi-scale decomposition:

* Reference: a Gaussian scale mixture (GSM). The subband is cut into non-overlapping ``M x M``
  blocks; block ``i`` is the vector ``C_i = s_i U_i`` (``M^2`` coefficients), ``U_i`` zero-mean
  Gaussian with covariance ``C_U`` (eigenvalues ``lambda_j``), ``s_i`` a positive scalar field.
* Distortion: ``D_i = g_i C_i + V_i``, a gain ``g_i`` and additive white Gaussian noise of variance
  ``sigma_v,i^2``, constant over a block.
* ``IFC = sum_k sum_i sum_j 1/2 log2(1 + g_i^2 s_i^2 lambda_j / sigma_v,i^2)`` bits: the mutual
  information between reference and distorted coefficients given the scale field. Unbounded
  (an undistorted image gives the largest values), 0 when nothing of the reference is left.

Estimates (the maximum-likelihood ones of the paper, written from its text): ``C_U`` is the sample
covariance of the subband's block vectors (means removed); ``s_i^2 = C_i^T C_U^-1 C_i / M^2``;
``g_i = cov(C_i, D_i) / var(C_i)`` and ``sigma_v,i^2 = var(D_i) - g_i cov(C_i, D_i)`` from the
block's ``M^2`` coefficient pairs. Negative gains are set to 0 (``sigma_v,i^2 = var(D_i)``), and
``sigma_v,i^2`` is at least :data:`SIGMA_FLOOR`.

**Variant, named honestly:** the paper used a steerable pyramid (Simoncelli's, several orientations).
This implementation uses the separable orthogonal wavelet transform of PyWavelets (``pywt.wavedec2``,
wavelet ``"db2"`` by default, :data:`DEFAULT_LEVELS` levels), and its three detail subbands per level
(horizontal, vertical, diagonal); the approximation band is left out as in the paper (its pyramid's
low-pass residual is not used). The model and the estimates are the paper's; absolute values differ
from the authors' MATLAB ``ifcvec`` (another decomposition, no overlapping blocks), so compare IFC
only between methods scored with this function.

Images are 2-D ``(y, x)`` arrays; the measure is in bits and is not symmetric (reference first).
Needs PyWavelets (``pip install nslfcore[metrics2d]``), imported when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Block size ``M`` (blocks of ``M x M`` coefficients), as in the paper.
BLOCK: int = 3
#: Decomposition levels (each gives three detail subbands).
DEFAULT_LEVELS: int = 3
#: Smallest noise variance ``sigma_v^2`` (coefficient units squared): an undistorted block stays finite.
SIGMA_FLOOR: float = 1e-10


def _pywt() -> Any:  # the module, imported when needed
    try:
        import pywt
    except ModuleNotFoundError as error:
        raise ImportError("IFC needs PyWavelets: install the 2-D metrics with `pip install nslfcore[metrics2d]`.") from error
    return pywt


def _blocks(subband: np.ndarray, block: int) -> np.ndarray:
    """Non-overlapping ``block x block`` tiles of a ``(y, x)`` subband as rows ``(n, block^2)`` (edges dropped)."""
    ny, nx = subband.shape[0] // block, subband.shape[1] // block
    tiles = subband[: ny * block, : nx * block].reshape(ny, block, nx, block).transpose(0, 2, 1, 3)
    return tiles.reshape(ny * nx, block * block)


def subband_ifc(reference: np.ndarray, distorted: np.ndarray, block: int = BLOCK) -> float:
    """IFC (bits) of one subband pair ``(y, x)`` under the GSM model; see the module docstring.

    A subband smaller than one block, or whose block vectors have a singular covariance, contributes 0.
    """
    c, d = _blocks(np.asarray(reference, np.float64), block), _blocks(np.asarray(distorted, np.float64), block)
    if len(c) < 2:
        return 0.0
    cov_u = np.cov(c, rowvar=False)  # C_U: (M^2, M^2)
    eigenvalues = np.clip(np.linalg.eigvalsh(cov_u), 0.0, None)
    if eigenvalues.max() <= 0:
        return 0.0
    s2 = np.einsum("ij,jk,ik->i", c, np.linalg.pinv(cov_u, hermitian=True), c) / c.shape[1]
    c0, d0 = c - c.mean(axis=1, keepdims=True), d - d.mean(axis=1, keepdims=True)
    var_c, var_d = (c0**2).mean(axis=1), (d0**2).mean(axis=1)
    cov_cd = (c0 * d0).mean(axis=1)
    gain = np.where(var_c > SIGMA_FLOOR, cov_cd / np.maximum(var_c, SIGMA_FLOOR), 0.0)
    gain = np.clip(gain, 0.0, None)
    sigma_v2 = np.maximum(var_d - gain * cov_cd, SIGMA_FLOOR)
    snr = (gain**2 * s2 / sigma_v2)[:, None] * eigenvalues[None, :]
    return float(0.5 * np.log2(1.0 + snr).sum())


def ifc(reference: np.ndarray, distorted: np.ndarray, wavelet: str = "db2", levels: int = DEFAULT_LEVELS) -> float:
    """Information fidelity criterion (bits) of ``distorted`` given ``reference``, both ``(y, x)``.

    The sum of :func:`subband_ifc` over the detail subbands of a ``levels``-level 2-D wavelet
    decomposition (``pywt.wavedec2(image, wavelet, mode="periodization")``) of each image. Values
    scale with image size (a sum over blocks); intensities in any unit (``g`` absorbs a contrast
    change of ``distorted``: ``ifc(r, a * d) == ifc(r, d)`` for ``a > 0``).

    Args:
        reference: the source image ``(y, x)`` (the GSM side).
        distorted: the image judged against it (a fused slice), same shape.
        wavelet: a PyWavelets orthogonal wavelet name (``"db2"``).
        levels: decomposition levels (3; each level halves the size, so each side needs at least
            ``BLOCK * 2**levels`` pixels for the coarsest subband to hold a block).

    Example::

        >>> ifc(t1[z], fused[z])  # two (y, x) slices
    """
    r, d = np.asarray(reference, np.float64), np.asarray(distorted, np.float64)
    if r.ndim != 2 or r.shape != d.shape:
        raise ValueError(f"IFC needs two 2-D (y, x) images of one shape, got {r.shape} and {d.shape}.")
    pywt = _pywt()
    ref_bands = pywt.wavedec2(r, wavelet, mode="periodization", level=levels)[1:]
    dis_bands = pywt.wavedec2(d, wavelet, mode="periodization", level=levels)[1:]
    return sum(subband_ifc(a, b) for level_r, level_d in zip(ref_bands, dis_bands) for a, b in zip(level_r, level_d))
