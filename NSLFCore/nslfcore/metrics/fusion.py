"""Fusion-quality metrics of NSLF: SSIM, PSNR, NMI and the spatial-frequency ratio (SFR).

:func:`fusion_metrics` scores a fused volume against each source (the four modalities, order
:data:`nslfcore.MODALITIES` for a standard stack), averaged over the sources; inputs are expected
in ``[0, data_range]`` (``[0, 1]`` after the ``"paper"`` normalisation of
:func:`nslfcore.data.transforms.normalize`) and are not rescaled here. :func:`ssim`, :func:`psnr`,
:func:`nmi` are per source; :func:`spatial_frequency_ratio` (SFR) is joint over the sources.

Volumes are 3-D ``(z, y, x)``, numpy arrays or torch tensors; SSIM, PSNR and SF run on the tensor's
device in float64, NMI on the CPU. The metrics work in voxel units (no spacing). Single metrics
return Python floats, :func:`fusion_metrics` a dictionary of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.networks.layers import separable_filtering

from nslfcore.metrics.utils import Array, _check_3d, _check_same_shape, _numpy

#: NMI variants of :func:`nmi`.
NMIMethod = Literal["studholme", "hossny"]


def _float64(array: Array, device: torch.device | None = None) -> torch.Tensor:
    """A float64 tensor of ``array`` (on ``device``, else the tensor's own device or the CPU)."""
    if isinstance(array, torch.Tensor):
        t = array.detach()
    else:
        a = np.ascontiguousarray(array)
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # read-only views (broadcast_to)
    return t.to(device=device if device is not None else t.device, dtype=torch.float64)


def _sources_list(sources: Array | Sequence[Array]) -> list[Array]:
    """``(S, z, y, x)`` stack or a sequence of ``(z, y, x)`` volumes -> list of volumes."""
    items = list(sources)
    if not items:
        raise ValueError("sources must hold at least one (z, y, x) volume.")
    return items


# --------------------------------------------------------------------------------------------------
# fusion metrics (per source)


def ssim(image: Array, reference: Array, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5) -> float:
    """Mean 3-D structural similarity (SSIM) of two ``(z, y, x)`` volumes; unitless, at most 1.

    Local statistics under a Gaussian window ``g`` (``win_size`` taps per axis, 11, standard deviation
    ``sigma`` 1.5 voxels, normalised to sum 1, the same 1-D kernel along z, y and x; ``*`` is
    convolution): ``mu_a = g * a``, population (biased) variances ``s_a^2 = g * a^2 - mu_a^2`` and covariance
    ``s_ab = g * (a b) - mu_a mu_b``; then per voxel::

        SSIM = (2 mu_a mu_b + C1) (2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (s_a^2 + s_b^2 + C2)),
        C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = data_range (1 after normalisation),

    averaged over the valid region: the voxels whose whole window lies inside the volume (a border
    of ``win_size // 2`` voxels is left out). This equals ``skimage.metrics.structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, win_size=11, use_sample_covariance=False,
    data_range=1)`` on float64 input (skimage keeps float32 input in float32; this function always
    computes in float64). The Gaussian is applied separably with MONAI's ``separable_filtering``,
    in float64, on the device of a tensor input (on 2 CPU cores about 2 s per filtered statistic of
    a 155 x 240 x 240 volume: 5 per call; :func:`fusion_metrics` needs ``2 + 3 S`` for ``S`` sources).

    Args:
        image, reference: ``(z, y, x)`` volumes of the same shape, values in ``[0, data_range]``;
            every size must be at least ``win_size``. The measure is symmetric.
        data_range: ``L`` above (1.0).
        win_size: odd window size in voxels (11).
        sigma: Gaussian standard deviation in voxels (1.5).

    Example::

        >>> ssim(fused, t1)  # fused, t1: (155, 240, 240) arrays in [0, 1]
    """
    return _ssim_against(image, [reference], data_range, win_size, sigma)[0]


def _ssim_against(
    image: Array, references: Sequence[Array], data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5
) -> list[float]:
    """:func:`ssim` of ``image`` against each reference, filtering ``image``'s statistics once."""
    for i, reference in enumerate(references):
        _check_same_shape(image, reference, "image", f"reference {i}")
    if win_size % 2 != 1 or min(image.shape) < win_size:
        raise ValueError(f"SSIM needs an odd win_size <= every size of {tuple(image.shape)}, got {win_size}.")
    a = _float64(image)
    offsets = torch.arange(win_size, dtype=torch.float64, device=a.device) - (win_size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    r = win_size // 2
    valid = tuple(slice(r, n - r) for n in image.shape)  # voxels whose whole window is inside

    def local_mean(v: torch.Tensor) -> torch.Tensor:  # one statistic at a time: low peak memory
        return separable_filtering(v[None, None], [kernel] * 3)[0, 0][valid]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a = local_mean(a)
    var_a = local_mean(a * a) - mu_a**2
    values = []
    for reference in references:
        b = _float64(reference, a.device)
        mu_b = local_mean(b)
        var_b = local_mean(b * b) - mu_b**2
        cov = local_mean(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(float(ssim_map.mean()))
    return values


def psnr(image: Array, reference: Array, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two ``(z, y, x)`` volumes.

    ``PSNR = 10 log10(L^2 / MSE)``, ``MSE = mean((a - b)^2)`` over every voxel (float64),
    ``L = data_range`` (1 after normalisation, so ``PSNR = 10 log10(1 / MSE)``). Identical volumes
    (MSE 0) give ``inf``. Equals ``skimage.metrics.peak_signal_noise_ratio(b, a, data_range=1)``.
    Symmetric in its arguments.
    """
    _check_same_shape(image, reference, "image", "reference")
    a = _float64(image)
    mse = float(torch.mean((a - _float64(reference, a.device)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a histogram of counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(image: Array, reference: Array, bins: int = 256, method: NMIMethod = "studholme") -> float:
    """Normalised mutual information of two ``(z, y, x)`` volumes (whole volume); unitless.

    Histogram: the joint histogram of ``numpy.histogramdd([a.ravel(), b.ravel()], bins=256)``, i.e.
    each image's value range ``[min, max]`` split into ``bins`` equal bins (the last bin closed; a
    constant image gets the range ``[v - 0.5, v + 0.5]``), the binning of
    ``skimage.metrics.normalized_mutual_information``. Entropies ``H`` of the marginal and joint
    distributions (the log base cancels in both ratios); ``MI(A, B) = H(A) + H(B) - H(A, B)``.

    * ``"studholme"`` (default, Studholme et al. 1999): ``NMI = (H(A) + H(B)) / H(A, B)``, in
      ``[1, 2]``, 2 for volumes that determine each other; equals
      ``skimage.metrics.normalized_mutual_information(a, b, bins=256)``.
    * ``"hossny"`` (Hossny et al. 2008, "Comments on 'Information measure for performance of image
      fusion'"): the per-source term of their ``Q_MI = 2 [MI(A,F) / (H(A) + H(F)) + MI(B,F) /
      (H(B) + H(F))]``, i.e. ``2 MI(A, B) / (H(A) + H(B)) = 2 - 2 / NMI_studholme``, in ``[0, 1]``.
      :func:`fusion_metrics` averages it over the sources, so its value is Hossny's ``Q_MI``
      divided by the number of sources.

    Two constant volumes (all entropies 0) give 2 (Studholme) or 1 (Hossny): they determine each other.
    """
    _check_same_shape(image, reference, "image", "reference")
    if method not in ("studholme", "hossny"):
        raise ValueError(f"nmi method {method!r} is unknown; use 'studholme' or 'hossny'.")
    joint, _ = np.histogramdd([_numpy(image).reshape(-1), _numpy(reference).reshape(-1)], bins=bins)
    h_a, h_b, h_ab = _entropy(joint.sum(axis=1)), _entropy(joint.sum(axis=0)), _entropy(joint.reshape(-1))
    studholme = 2.0 if h_ab == 0 else (h_a + h_b) / h_ab
    return studholme if method == "studholme" else 2.0 - 2.0 / studholme


# --------------------------------------------------------------------------------------------------
# spatial frequency ratio (joint over the sources)

#: Weight of the squared in-plane diagonal differences (Zheng et al. 2007's ``w_d = 1 / sqrt(2)``).
DIAGONAL_WEIGHT: float = 1.0 / math.sqrt(2.0)


def _first_differences(volume: torch.Tensor) -> list[torch.Tensor]:
    """First differences of a ``(z, y, x)`` volume along x, y, z and the two in-plane diagonals."""
    v = volume
    return [
        v[:, :, 1:] - v[:, :, :-1],  # x (row frequency RF)
        v[:, 1:, :] - v[:, :-1, :],  # y (column frequency CF)
        v[1:, :, :] - v[:-1, :, :],  # z (slice frequency SLF, the 3-D addition)
        v[:, 1:, 1:] - v[:, :-1, :-1],  # main diagonal in each (y, x) slice (MDF)
        v[:, 1:, :-1] - v[:, :-1, 1:],  # secondary diagonal in each (y, x) slice (SDF)
    ]


_WEIGHTS = (1.0, 1.0, 1.0, DIAGONAL_WEIGHT, DIAGONAL_WEIGHT)


def _sf_from_differences(differences: Sequence[torch.Tensor], voxels: int) -> float:
    total = sum(w * float((d**2).sum()) for w, d in zip(_WEIGHTS, differences, strict=True))
    return math.sqrt(total / voxels)


def spatial_frequency(volume: Array) -> float:
    """Extended 3-D spatial frequency of a ``(z, y, x)`` volume, in intensity units per voxel.

    Zheng et al. 2007 ("A new metric based on extended spatial frequency and its application to DWT
    based fusion algorithms", Information Fusion 8:177-192) extend the 2-D SF with two diagonal
    terms: ``SF = sqrt(RF^2 + CF^2 + MDF^2 + SDF^2)``, every term a mean of squared first
    differences over the ``M N`` pixels, the diagonal ones weighted by ``w_d = 1/sqrt(2)``. Here, in
    3-D, with ``N = Z Y X`` voxels and ``I = I(z, y, x)``::

        RF^2  = 1/N  sum (I(z, y, x) - I(z, y, x-1))^2          (along x)
        CF^2  = 1/N  sum (I(z, y, x) - I(z, y-1, x))^2          (along y)
        SLF^2 = 1/N  sum (I(z, y, x) - I(z-1, y, x))^2          (along z: the slice term)
        MDF^2 = w_d/N sum (I(z, y, x) - I(z, y-1, x-1))^2       (main diagonal in each axial slice)
        SDF^2 = w_d/N sum (I(z, y, x) - I(z, y-1, x+1))^2       (secondary diagonal, same slice)
        SF    = sqrt(RF^2 + CF^2 + SLF^2 + MDF^2 + SDF^2)

    each sum running over the voxel pairs inside the volume (the normaliser stays ``N``, as Zheng's
    ``1 / (M N)``). Diagonals are taken only in the axial ``(y, x)`` planes (the plane of the
    paper's 2-D images; no through-plane diagonals), so a one-slice volume gives Zheng's 2-D SF
    exactly. Differences are per voxel step, spacing is ignored (it cancels in the ratio of
    :func:`spatial_frequency_ratio` only for isotropic voxels; BraTS is 1 mm isotropic).
    """
    _check_3d(volume, "volume")
    v = _float64(volume)
    return _sf_from_differences(_first_differences(v), v.numel())


def _sf_fused_and_reference(fused: Array, sources: Array | Sequence[Array]) -> tuple[float, float]:
    items = _sources_list(sources)
    for i, source in enumerate(items):
        _check_same_shape(fused, source, "fused", f"source {i}")
    f = _float64(fused)
    reference: list[torch.Tensor] | None = None
    for source in items:
        grads = [d.abs() for d in _first_differences(_float64(source, f.device))]
        reference = grads if reference is None else [torch.maximum(r, g) for r, g in zip(reference, grads, strict=True)]
    assert reference is not None
    return _sf_from_differences(_first_differences(f), f.numel()), _sf_from_differences(reference, f.numel())


def spatial_frequency_ratio(fused: Array, sources: Array | Sequence[Array]) -> float:
    """Spatial-frequency ratio ``SFR = SF_F / SF_R = 1 + rSFe``; unitless, 1 is ideal.

    Zheng et al. 2007's ratio of SF error ``rSFe = (SF_F - SF_R) / SF_R`` (> 0 over-fused, < 0
    under-fused), shifted by 1. ``SF_F`` is :func:`spatial_frequency` of the fused volume.
    ``SF_R``, the reference SF, uses the same formula on reference gradients: per direction
    ``D`` (x, y, z, main and secondary in-plane diagonal) and voxel, the largest absolute first
    difference over the sources, ``G_D = max_s |Delta_D I_s|``::

        SF_R = sqrt(1/N [sum G_x^2 + sum G_y^2 + sum G_z^2 + w_d (sum G_md^2 + sum G_sd^2)])

    Args:
        fused: ``(z, y, x)``.
        sources: ``(S, z, y, x)`` stack or a sequence of ``S`` ``(z, y, x)`` volumes.

    ``SF_R = 0`` (every source constant) gives ``inf``, or 1 when the fused volume is constant too.
    """
    return _sf_ratio(*_sf_fused_and_reference(fused, sources))


def _sf_ratio(sf_f: float, sf_r: float) -> float:
    if sf_r == 0:
        return 1.0 if sf_f == 0 else math.inf
    return sf_f / sf_r


def fusion_metrics(
    fused: Array,
    sources: Array | Sequence[Array],
    data_range: float = 1.0,
    nmi_method: NMIMethod = "studholme",
) -> dict[str, Any]:
    """The paper's fusion metrics of a fused volume against its sources.

    Args:
        fused: ``(z, y, x)`` fused volume in ``[0, data_range]``.
        sources: ``(S, z, y, x)`` stack (``(t1, t1ce, t2, flair)`` for nslfcore's stacks) or a
            sequence of ``S`` ``(z, y, x)`` volumes, same range. Not rescaled here.
        data_range: ``L`` of SSIM and PSNR (1).
        nmi_method: ``"studholme"`` (the paper's NMI, default) or ``"hossny"`` (``Q_MI`` per
            source); see :func:`nmi`.

    Returns:
        ``{"ssim", "psnr", "nmi", "sfr"}``: the means over the sources of :func:`ssim`,
        :func:`psnr` (dB; ``inf`` if a source equals the fused volume) and :func:`nmi` (the method
        chosen), and the joint :func:`spatial_frequency_ratio`; ``"sf_fused"`` and
        ``"sf_reference"`` (its ``SF_F`` and ``SF_R``); ``"nmi_method"``; and ``"per_source"``:
        ``{"ssim": [...], "psnr": [...], "nmi": [...]}``, one float per source in source order.

    Example::

        >>> m = fusion_metrics(fused, image)  # fused (z, y, x), image (4, z, y, x), both in [0, 1]
        >>> m["ssim"], m["per_source"]["ssim"][3]  # mean SSIM, SSIM against FLAIR
    """
    items = _sources_list(sources)
    for i, source in enumerate(items):
        _check_same_shape(fused, source, "fused", f"source {i}")
    per_source = {
        "ssim": _ssim_against(fused, items, data_range=data_range),
        "psnr": [psnr(fused, source, data_range=data_range) for source in items],
        "nmi": [nmi(fused, source, method=nmi_method) for source in items],
    }
    sf_f, sf_r = _sf_fused_and_reference(fused, items)
    return {
        **{name: float(np.mean(values)) for name, values in per_source.items()},
        "sfr": _sf_ratio(sf_f, sf_r),
        "sf_fused": sf_f,
        "sf_reference": sf_r,
        "nmi_method": nmi_method,
        "per_source": per_source,
    }
