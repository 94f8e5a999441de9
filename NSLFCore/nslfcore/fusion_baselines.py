"""Classical multi-modal fusion baselines: four co-registered volumes -> one fused volume.

The methods NSLF's fusion is compared with (issue 16, point 1), each a function
``(4, z, y, x) float32 -> (z, y, x) float32`` of the four normalised modalities
(:data:`nslfcore.MODALITIES` order, ``[0, 1]`` after :func:`nslfcore.data.transforms.normalize`),
all in 3-D, listed by name in :data:`FUSION_METHODS`:

* ``mean``: the voxel-wise average;
* ``max``: the voxel-wise maximum;
* ``pca``: a weighted average whose weights are the first principal component of the four
  modalities over the brain voxels, normalised to sum 1 (the PCA fusion of e.g. Naidu & Raol,
  "Pixel-level image fusion using wavelets and principal component analysis", 2008);
* ``laplacian``: Laplacian-pyramid fusion (Burt & Adelson 1983; Burt & Kolczynski 1993): per detail
  level the coefficient of largest magnitude across modalities, the mean at the coarsest level;
* ``guided``: guided-filtering fusion (Li, Kang & Hu, "Image fusion with guided filtering",
  IEEE TIP 2013), with He et al.'s guided filter ("Guided image filtering", 2013) built from box filters;
* ``dwt``: discrete-wavelet-transform fusion (Li, Manjunath & Mitra, "Multisensor image fusion using
  the wavelet transform", 1995; Pajares & de la Cruz, "A wavelet-based image fusion tutorial", 2004)
  in 3-D with PyWavelets: approximation averaged, details by maximum absolute value.

``laplacian`` needs scikit-image and ``dwt`` PyWavelets, both in the ``baselines`` extra
(``pip install nslfcore[baselines]``); they are imported when the method runs, so nslfcore works
without them and a missing one is named in a one-sentence ``ImportError``.

:class:`ClassicalFusion` wraps a method as a fusion-only :class:`~nslfcore.models.interface.Network`,
so :func:`nslfcore.inference.run` and :func:`nslfcore.evaluation.evaluate` (``nslf evaluate --model
classical:NAME``) score it exactly like NSLF's fusion: the same preprocessing (brain box,
normalisation), the same pasting back, the same metrics (:func:`nslfcore.metrics.fusion_metrics`).

Arrays are numpy, axes ``(modality, z, y, x)`` in, ``(z, y, x)`` out (the order of a SimpleITK
array); the methods work in voxel units and need no geometry.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from nslfcore.config import SegmentationOutput
from nslfcore.data.transforms import brain_mask

#: A fusion method: ``(4, z, y, x)`` sources -> ``(z, y, x)`` fused volume, float32.
FusionMethod = Callable[[np.ndarray], np.ndarray]

#: What ``nslf evaluate --model`` takes to score a classical method: ``classical:<name>``.
CLASSICAL_PREFIX = "classical:"


def _optional(module: str, package: str, method: str) -> Any:
    """``module`` imported now (a method needs it), or an ``ImportError`` naming ``package`` and the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ImportError(f"{method} fusion needs {package}: install it with `pip install nslfcore[baselines]`.") from error


def _skimage_transform() -> Any:
    return _optional("skimage.transform", "scikit-image", "Laplacian-pyramid")


def _pywt() -> Any:
    return _optional("pywt", "PyWavelets", "Wavelet (DWT)")


def _sources(volumes: np.ndarray) -> np.ndarray:
    """``volumes`` as float32 ``(n, z, y, x)``, checked."""
    array = np.asarray(volumes, dtype=np.float32)
    if array.ndim != 4 or array.shape[0] < 1:
        raise ValueError(f"Fusion needs the sources as one (modality, z, y, x) array, got shape {array.shape}.")
    return array


def mean_fusion(volumes: np.ndarray) -> np.ndarray:
    """The voxel-wise mean of the sources ``(n, z, y, x)`` -> ``(z, y, x)``."""
    return _sources(volumes).mean(axis=0)


def max_fusion(volumes: np.ndarray) -> np.ndarray:
    """The voxel-wise maximum of the sources ``(n, z, y, x)`` -> ``(z, y, x)``."""
    return _sources(volumes).max(axis=0)


def pca_weights(volumes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The PCA fusion weights ``(n,)``: the first principal component of the sources, summing to 1.

    The principal component is the eigenvector of the largest eigenvalue of the ``n x n`` covariance
    of the sources over the voxels of ``mask`` ``(z, y, x)`` (default: the brain,
    :func:`nslfcore.data.transforms.brain_mask`, any source > 0). Its sign is arbitrary, so its
    absolute values are used, then divided by their sum. Without two masked voxels or without any
    variance the weights are equal.
    """
    array = _sources(volumes)
    n = array.shape[0]
    inside = brain_mask(array) if mask is None else np.asarray(mask, dtype=bool)
    samples = array[:, inside].astype(np.float64)
    if samples.shape[1] < 2:
        return np.full(n, 1.0 / n)
    covariance = np.atleast_2d(np.cov(samples))
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending eigenvalues
    component = np.abs(eigenvectors[:, -1])
    if eigenvalues[-1] <= 0 or component.sum() <= 0:
        return np.full(n, 1.0 / n)
    return component / component.sum()


def pca_fusion(volumes: np.ndarray) -> np.ndarray:
    """The sources ``(n, z, y, x)`` averaged with :func:`pca_weights` -> ``(z, y, x)``."""
    array = _sources(volumes)
    weights = pca_weights(array).astype(np.float32)
    return np.tensordot(weights, array, axes=1).astype(np.float32)


def laplacian_pyramid(volume: np.ndarray, levels: int) -> list[np.ndarray]:
    """A Laplacian pyramid of a ``(z, y, x)`` volume: ``levels`` detail volumes, then the coarsest Gaussian level.

    Gaussian levels ``G_0 = volume``, ``G_{k+1}`` = ``G_k`` smoothed and halved
    (``skimage.transform.pyramid_gaussian``); details ``L_k = G_k - up(G_{k+1})`` with ``up`` the
    linear ``skimage.transform.resize`` to ``G_k``'s shape. :func:`reconstruct_laplacian` inverts it
    exactly (up to rounding), whatever ``up`` is.
    """
    volume = np.asarray(volume, dtype=np.float32)
    gaussian = list(_skimage_transform().pyramid_gaussian(volume, max_layer=levels, channel_axis=None, preserve_range=True))
    details = [g - _upsample(coarser, g.shape) for g, coarser in zip(gaussian[:-1], gaussian[1:])]
    return [*details, gaussian[-1]]


def _upsample(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return _skimage_transform().resize(volume, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


def reconstruct_laplacian(pyramid: list[np.ndarray]) -> np.ndarray:
    """The volume of a :func:`laplacian_pyramid`: ``G_k = L_k + up(G_{k+1})`` from the coarsest level down."""
    volume = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        volume = detail + _upsample(volume, detail.shape)
    return volume


def max_abs(stack: np.ndarray) -> np.ndarray:
    """The "choose max" rule: per position, the entry in ``stack`` ``(n, ...)`` largest in magnitude along axis 0."""
    choice = np.abs(stack).argmax(axis=0)
    return np.take_along_axis(stack, choice[None], axis=0)[0]


def laplacian_fusion(volumes: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion of the sources ``(n, z, y, x)`` -> ``(z, y, x)``.

    Each source gets a :func:`laplacian_pyramid` of up to ``levels`` detail levels (fewer when the
    volume is small: the coarsest level keeps at least 4 voxels per axis); per detail level and
    voxel the fused coefficient is the source coefficient of largest absolute value (the
    "choose max" rule), at the coarsest level the mean; :func:`reconstruct_laplacian` gives the
    fused volume. Detail coefficients of different sources add up, so the result can leave the
    sources' range slightly (overshoot at edges).
    """
    array = _sources(volumes)
    usable = max(0, int(math.floor(math.log2(min(array.shape[1:]) / 4)))) if min(array.shape[1:]) >= 4 else 0
    depth = min(int(levels), usable)
    pyramids = [laplacian_pyramid(source, depth) for source in array]
    fused = [max_abs(np.stack([pyramid[level] for pyramid in pyramids])) for level in range(depth)]
    fused.append(np.mean([pyramid[-1] for pyramid in pyramids], axis=0))
    return reconstruct_laplacian(fused).astype(np.float32)


def box_filter(volume: np.ndarray, radius: int) -> np.ndarray:
    """The mean over the ``(2 radius + 1)^3`` box around each voxel (``scipy.ndimage.uniform_filter``, mirrored edges)."""
    return ndimage.uniform_filter(volume, size=2 * int(radius) + 1, mode="reflect")


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``source`` with ``guide`` (both ``(z, y, x)``), in 3-D.

    In each ``(2 radius + 1)^3`` box ``w`` the output is linear in the guide, ``q = a_w I + b_w``
    with ``a_w = cov_w(I, p) / (var_w(I) + eps)`` and ``b_w = mean_w(p) - a_w mean_w(I)``; each
    voxel averages the ``a`` and ``b`` of the boxes that contain it: ``q = mean(a) I + mean(b)``.
    Where the guide varies much more than ``eps`` (an edge) ``a`` is near 1 and the edge of the
    guide is kept; where it is flat ``q`` is the box mean of ``p``. All means are :func:`box_filter`.
    """
    guide = np.asarray(guide, dtype=np.float64)
    source = np.asarray(source, dtype=np.float64)
    mean_i, mean_p = box_filter(guide, radius), box_filter(source, radius)
    var_i = box_filter(guide * guide, radius) - mean_i * mean_i
    cov_ip = box_filter(guide * source, radius) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


def guided_fusion(
    volumes: np.ndarray,
    base_radius: int = 15,
    saliency_radius: int = 5,
    saliency_sigma: float = 5.0,
    base_filter: tuple[int, float] = (45, 0.3),
    detail_filter: tuple[int, float] = (7, 1e-6),
) -> np.ndarray:
    """Guided-filtering fusion (GFF, Li, Kang & Hu 2013) of the sources ``(n, z, y, x)`` -> ``(z, y, x)``, in 3-D.

    1. Two scales: base ``B_n`` = the :func:`box_filter` of source ``I_n`` (radius ``base_radius``:
       the paper's 31 x 31 mean filter), detail ``D_n = I_n - B_n``.
    2. Saliency ``S_n``: the magnitude of the discrete Laplacian of ``I_n`` (6 neighbours,
       ``scipy.ndimage.laplace``: the 3-D form of the paper's 3 x 3 Laplacian), smoothed by a Gaussian
       of ``saliency_sigma`` truncated at ``saliency_radius`` voxels.
    3. Weight maps ``P_n = 1`` where ``S_n`` is the largest of the sources (ties: the first), else 0.
    4. ``W_n^B``, ``W_n^D``: ``P_n`` refined by :func:`guided_filter` with ``I_n`` as guide,
       ``(radius, eps)`` = ``base_filter`` for the base, ``detail_filter`` for the detail (the paper's
       ``r1 = 45, eps1 = 0.3, r2 = 7, eps2 = 1e-6``), each clipped at 0 and normalised to sum 1 per voxel.
    5. ``F = sum_n W_n^B B_n + sum_n W_n^D D_n``, clipped to the sources' overall range (the paper
       stores 8-bit images, which clips the same way).

    The paper's radii are for 2-D images of a few hundred pixels and are kept as the defaults for
    brain boxes of similar size per axis.
    """
    array = _sources(volumes).astype(np.float64)
    base = np.stack([box_filter(source, base_radius) for source in array])
    detail = array - base
    truncate = saliency_radius / saliency_sigma
    saliency = np.stack([ndimage.gaussian_filter(np.abs(ndimage.laplace(s)), saliency_sigma, truncate=truncate) for s in array])
    choice = saliency.argmax(axis=0)
    masks = [(choice == n).astype(np.float64) for n in range(array.shape[0])]
    fused = np.zeros(array.shape[1:])
    for layer, (radius, eps) in ((base, base_filter), (detail, detail_filter)):
        weights = np.stack([guided_filter(source, p, radius, eps) for source, p in zip(array, masks)])
        weights = np.clip(weights, 0.0, None)
        total = weights.sum(axis=0)
        weights = np.where(total > 1e-12, weights / np.maximum(total, 1e-12), 1.0 / array.shape[0])
        fused += (weights * layer).sum(axis=0)
    return np.clip(fused, array.min(), array.max()).astype(np.float32)


#: The wavelet of :func:`dwt_fusion`: Daubechies 2 (4 taps, orthogonal, two vanishing moments).
DWT_WAVELET = "db2"


def dwt_fusion(volumes: np.ndarray, levels: int = 3, wavelet: str = DWT_WAVELET) -> np.ndarray:
    """3-D discrete-wavelet fusion of the sources ``(n, z, y, x)`` -> ``(z, y, x)`` (needs PyWavelets).

    Each source gets a ``levels``-level 3-D DWT (``pywt.wavedecn``, ``wavelet``, symmetric
    extension; fewer levels when the volume is too small for them, ``pywt.dwtn_max_level``). The
    standard fusion rule: the approximation (coarsest, low-pass) coefficients are averaged, and in
    each of the seven detail subbands of every level the coefficient of largest absolute value
    across sources is kept (:func:`max_abs`, "choose max": the strongest edge or texture of any
    source). ``pywt.waverecn`` gives the fused volume, cut to the sources' shape. Identical sources
    give the source back (the transform reconstructs perfectly); as with :func:`laplacian_fusion`
    the result can leave the sources' range slightly at edges. Too small for one level: the mean.
    """
    pywt = _pywt()
    array = _sources(volumes).astype(np.float64)
    shape = array.shape[1:]
    depth = min(int(levels), pywt.dwtn_max_level(shape, wavelet))
    if depth < 1:
        return array.mean(axis=0).astype(np.float32)
    coefficients = [pywt.wavedecn(source, wavelet, mode="symmetric", level=depth) for source in array]
    fused: list[Any] = [np.mean([c[0] for c in coefficients], axis=0)]
    for level in range(1, depth + 1):
        fused.append({key: max_abs(np.stack([c[level][key] for c in coefficients])) for key in coefficients[0][level]})
    volume = pywt.waverecn(fused, wavelet, mode="symmetric")
    return volume[tuple(slice(0, n) for n in shape)].astype(np.float32)


#: The classical fusion methods by name (``nslf evaluate --model classical:<name>``).
FUSION_METHODS: dict[str, FusionMethod] = {
    "mean": mean_fusion,
    "max": max_fusion,
    "pca": pca_fusion,
    "laplacian": laplacian_fusion,
    "guided": guided_fusion,
    "dwt": dwt_fusion,
}
#: The optional packages a method imports (checked when a :class:`ClassicalFusion` is made).
_DEPENDENCIES: dict[str, Callable[[], Any]] = {"laplacian": _skimage_transform, "dwt": _pywt}


def _method(name: str) -> FusionMethod:
    if name not in FUSION_METHODS:
        raise ValueError(f"Unknown fusion method {name!r}; choose one of {', '.join(FUSION_METHODS)}.")
    return FUSION_METHODS[name]


def fuse_classical(volumes: np.ndarray, method: str) -> np.ndarray:
    """Fuse the sources ``(n, z, y, x)`` with the method named ``method`` (:data:`FUSION_METHODS`) -> ``(z, y, x)``."""
    return _method(method)(volumes)


class ClassicalFusion(torch.nn.Module):
    """A classical fusion method as a fusion-only :class:`~nslfcore.models.interface.Network`.

    :meth:`predict` fuses each batch item's four ``(z, y, x)`` volumes with the method on the CPU
    (numpy) and returns ``(fused (B, 1, D, H, W), None)`` on the input's device and dtype. No
    weights: nothing to train or save. Inference runs it on the whole brain box (its memory need is
    small, so ``mode="auto"`` picks ``"whole"``); sliding windows would fuse each window on its own.

    Example:
        >>> from nslfcore.inference import fuse
        >>> result = fuse(case, ClassicalFusion("pca"), device="cpu")  # doctest: +SKIP
    """

    fuses = True
    segments = False
    sequential = False

    def __init__(self, method: str) -> None:
        super().__init__()
        _method(method)  # an unknown name or a missing package fails here, not at the first case
        if method in _DEPENDENCIES:
            _DEPENDENCIES[method]()
        self.method = method

    @property
    def segmentation_output(self) -> SegmentationOutput:
        return "classes"  # never used: the method does not segment

    def predict(
        self, x: torch.Tensor, segment: bool = True, sequential: bool = False, present: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(fused (B, 1, D, H, W), None)`` for ``x`` ``(B, 4, D, H, W)`` (``segment``, ``sequential`` are ignored).

        ``present`` ``(B, 4)`` bool: each case is fused from its present modalities only (``None``: all four).
        """
        sources = x.detach().float().cpu().numpy()
        keep = np.ones(sources.shape[:2], bool) if present is None else present.detach().cpu().numpy()
        fused = np.stack([fuse_classical(item[k] if k.any() else item, self.method) for item, k in zip(sources, keep)])[:, None]
        return torch.from_numpy(np.ascontiguousarray(fused)).to(device=x.device, dtype=x.dtype), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused, _ = self.predict(x)
        assert fused is not None
        return fused

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        """A safe upper bound of the working memory per voxel: a few float64 copies of the four sources."""
        return 8 * 4 * 8

    def checkpoint_fields(self) -> dict[str, Any]:
        """A classical method has no model file; name it as ``classical:<name>`` instead."""
        raise ValueError(f"{CLASSICAL_PREFIX}{self.method} has no weights to save; name it as {CLASSICAL_PREFIX}{self.method}.")
