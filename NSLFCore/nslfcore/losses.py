"""Loss functions of NSLF's three nested training stages (paper section "Nested training").

Low-level terms (each a small ``nn.Module`` callable on plain tensors):

* stage 1 (CU-Net pre-training): :class:`ReconstructionLoss`, :class:`InfoNCEContrastiveLoss`
  (the paper's contrastive loss, default), :class:`MarginContrastiveLoss` (the public code's form),
  and :func:`intensity_noise_augment`, which makes the positive view;
* stage 2 (fusion): :class:`FidelityLoss`, :class:`BrightnessLoss` ("light"), :class:`SourceSSIMLoss`,
  :class:`SourceLNCCLoss`, :class:`DVFSmoothnessLoss`;
* stage 3 (segmentation): :class:`WeightedCrossEntropyLoss`, :class:`ForegroundDiceLoss`.

Composites :class:`Stage1Loss`, :class:`Stage2Loss` and :class:`Stage3Loss` weight the terms with a
small dataclass (:class:`Stage1LossWeights`, ...) and return ``{term: tensor, ..., "total": tensor}``
with ``total = sum(weight * term)``; a term whose weight is 0 is neither computed nor reported.

MONAI implements: 3-D SSIM (the statistics of ``monai.losses.SSIMLoss``, filtered with MONAI's
separable Gaussian ``separable_filtering``), local squared NCC
(``monai.losses.LocalNormalizedCrossCorrelationLoss``), central-difference DVF smoothness
(``monai.losses.DiffusionLoss``) and soft Dice (``monai.losses.DiceLoss``). The norm-based terms
the paper defines (reconstruction, contrastive, fidelity, brightness) are written here.

Scaling: the public code multiplies L2 norms by ``1 / (80 * 80 * 64)``, one over the voxels of its
training crop. Here the factor is one over the voxels of the tensor at hand, ``1 / (D * H * W)``,
which is the same number at that crop. It makes those terms small (about ``rmse / sqrt(D*H*W)``)
next to SSIM and NCC; the public weights are kept as defaults, and every weight is configurable.

Conventions: tensors are ``(B, C, D, H, W)`` with spatial axes ``(z, y, x)``; the four sources are
``x`` ``(B, 4, D, H, W)`` in the order ``nslfcore.MODALITIES`` with intensities in ``[0, 1]``
(unitless); labels are int64 ``(B, D, H, W)`` with classes 0 background, 1 NCR, 2 edema, 3 ET.
``reduction`` follows MONAI: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for ``(B,)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.layers import separable_filtering
from monai.utils import LossReduction
from torch import nn

Reduction = Literal["mean", "sum", "none"]

#: Class weights of the stage-3 cross-entropy (background, NCR, edema, ET), as in the public code.
CLASS_WEIGHTS: tuple[float, float, float, float] = (0.2, 0.3, 0.25, 0.25)


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a ``(B,)`` tensor of per-batch-item losses MONAI-style."""
    if reduction == LossReduction.MEAN.value:
        return per_item.mean()
    if reduction == LossReduction.SUM.value:
        return per_item.sum()
    if reduction == LossReduction.NONE.value:
        return per_item
    raise ValueError(f'Unsupported reduction {reduction!r}; use "mean", "sum" or "none".')


def _check_reduction(reduction: str) -> str:
    return LossReduction(reduction).value


def _voxels(t: torch.Tensor, first_spatial: int = 2) -> int:
    """Number of voxels of ``t``'s spatial axes (``first_spatial`` onwards)."""
    return math.prod(t.shape[first_spatial:])


def _item_norm(diff: torch.Tensor) -> torch.Tensor:
    """L2 norm of each batch item of ``diff`` ``(B, ...)``, flattened: ``(B,)``."""
    return torch.linalg.vector_norm(diff.flatten(1), dim=1)


def _check_fused_sources(fused: torch.Tensor, sources: torch.Tensor, name: str) -> None:
    if fused.ndim != 5 or fused.shape[1] != 1:
        raise ValueError(f"{name} expects a fused volume of shape (B, 1, D, H, W), got {tuple(fused.shape)}.")
    if sources.ndim != 5 or sources.shape[0] != fused.shape[0] or sources.shape[2:] != fused.shape[2:]:
        raise ValueError(
            f"{name} expects sources (B, M, D, H, W) matching the fused volume {tuple(fused.shape)}, "
            f"got {tuple(sources.shape)}."
        )


# --------------------------------------------------------------------------------------------
# Stage 1: CU-Net pre-training
# --------------------------------------------------------------------------------------------


def intensity_noise_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    gain: tuple[float, float] = (0.9, 1.1),
    bias: tuple[float, float] = (-0.05, 0.05),
    gamma: tuple[float, float] = (0.8, 1.25),
    noise_std: tuple[float, float] = (0.0, 0.03),
) -> torch.Tensor:
    """The contrastive positive view: a random intensity change plus Gaussian noise, per modality.

    For every batch item ``b`` and modality ``m`` draw ``g ~ U(gain)``, ``c ~ U(bias)``,
    ``log(gamma_bm) ~ U(log gamma)`` and ``s ~ U(noise_std)``, then
    ``y = clamp(g * x ** gamma_bm + c + s * N(0, 1), 0, 1)`` voxel-wise. The geometry is unchanged,
    so the view's features must stay close to the original's (same modality, same anatomy).

    Args:
        x: ``(B, M, D, H, W)``, spatial ``(z, y, x)``, intensities in ``[0, 1]``.
        generator: source of randomness; the result is a deterministic function of ``x`` and the
            generator's state. The draws are made on the generator's device and moved to ``x``'s.
        gain, bias, gamma, noise_std: ``(low, high)`` ranges of the four random parameters
            (``gamma`` is drawn log-uniformly; ``noise_std`` in intensity units).

    Returns:
        ``(B, M, D, H, W)`` in ``[0, 1]``, without gradient (it is an input, not a model output).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> view = intensity_noise_augment(torch.rand(1, 4, 8, 8, 8), generator=g)
    """
    if x.ndim < 3:
        raise ValueError(f"intensity_noise_augment expects (B, M, D, H, W), got shape {tuple(x.shape)}.")
    device = generator.device if generator is not None else x.device
    shape = (*x.shape[:2], *([1] * (x.ndim - 2)))

    def uniform(low: float, high: float) -> torch.Tensor:
        r = torch.rand(shape, generator=generator, device=device, dtype=x.dtype)
        return (low + (high - low) * r).to(x.device)

    with torch.no_grad():
        g = uniform(*gain)
        c = uniform(*bias)
        exponent = uniform(math.log(gamma[0]), math.log(gamma[1])).exp()
        s = uniform(*noise_std)
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        return (g * x.clamp(min=0) ** exponent + c + s * noise).clamp(0, 1)


class ReconstructionLoss(nn.Module):
    """CU-Net reconstruction loss (stage 1).

    ``form="norm"`` (the public code, default):
    ``L_b = (1 / (D*H*W)) * sum_m || r_bm - x_bm ||_2`` -- the L2 norm (not squared) of each
    modality's error, summed over modalities, divided by the voxel count.
    ``form="mse"``: ``L_b = mean_{m, voxels} (r_bm - x_bm) ** 2``.

    Args:
        form: ``"norm"`` or ``"mse"``.
        reduction: over the batch (see module docstring).

    ``forward(reconstruction, x)``: both ``(B, M, D, H, W)``, intensities in ``[0, 1]``.
    Returns a scalar (``(B,)`` for ``reduction="none"``), in intensity units (``"norm"``) or
    squared intensity units (``"mse"``).
    """

    def __init__(self, form: Literal["norm", "mse"] = "norm", reduction: Reduction = "mean") -> None:
        super().__init__()
        if form not in ("norm", "mse"):
            raise ValueError(f'ReconstructionLoss form must be "norm" or "mse", got {form!r}.')
        self.form = form
        self.reduction = _check_reduction(reduction)

    def forward(self, reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if reconstruction.shape != x.shape:
            raise ValueError(
                f"Reconstruction {tuple(reconstruction.shape)} and input {tuple(x.shape)} differ in shape."
            )
        diff = reconstruction - x
        if self.form == "mse":
            per_item = diff.pow(2).flatten(1).mean(dim=1)
        else:
            per_modality = torch.linalg.vector_norm(diff.flatten(2), dim=2)  # (B, M)
            per_item = per_modality.sum(dim=1) / _voxels(x)
        return _reduce(per_item, self.reduction)


def _check_contrastive(features: torch.Tensor, positive_features: torch.Tensor, name: str) -> None:
    if features.shape != positive_features.shape:
        raise ValueError(
            f"{name}: features {tuple(features.shape)} and positive features "
            f"{tuple(positive_features.shape)} differ in shape."
        )
    if features.ndim < 3 or features.shape[1] < 2:
        raise ValueError(
            f"{name} expects features (B, M, C, ...) with at least two modalities M, got {tuple(features.shape)}."
        )


class InfoNCEContrastiveLoss(nn.Module):
    """Contrastive loss of the paper (InfoNCE form, default of stage 1).

    Each modality's feature is the anchor; its positive is the same modality's feature computed from
    an intensity/noise-augmented input (:func:`intensity_noise_augment`), its negatives are the other
    modalities' features of the same case. With ``z`` the L2-normalised, spatially average-pooled
    feature and ``cos`` the cosine similarity:

    ``L_bm = -log( exp(cos(z_bm, z+_bm) / t) / (exp(cos(z_bm, z+_bm) / t) + sum_{k != m} exp(cos(z_bm, z_bk) / t)) )``

    and ``L_b = mean_m L_bm`` (dimensionless, between 0 and about ``log M + 2 / t``).

    Args:
        temperature: ``t`` > 0.
        reduction: over the batch.

    ``forward(features, positive_features)``: both ``(B, M, C, *spatial)`` (e.g. CU-Net global
    features ``(B, 4, w4, D/16, H/16, W/16)``) or already pooled ``(B, M, C)``.
    """

    def __init__(self, temperature: float = 0.1, reduction: Reduction = "mean") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"InfoNCE temperature must be positive, got {temperature}.")
        self.temperature = temperature
        self.reduction = _check_reduction(reduction)

    def forward(self, features: torch.Tensor, positive_features: torch.Tensor) -> torch.Tensor:
        _check_contrastive(features, positive_features, "InfoNCEContrastiveLoss")
        z = F.normalize(features.flatten(3).mean(dim=3) if features.ndim > 3 else features, dim=2)
        zp = F.normalize(positive_features.flatten(3).mean(dim=3) if features.ndim > 3 else positive_features, dim=2)
        b, m = z.shape[:2]
        positive = (z * zp).sum(dim=2, keepdim=True)  # (B, M, 1)
        cross = z @ z.transpose(1, 2)  # (B, M, M): cos(z_m, z_k)
        off_diagonal = ~torch.eye(m, dtype=torch.bool, device=z.device)
        negatives = cross[:, off_diagonal].reshape(b, m, m - 1)
        logits = torch.cat((positive, negatives), dim=2) / self.temperature  # positive at index 0
        per_anchor = -F.log_softmax(logits, dim=2)[..., 0]  # (B, M)
        return _reduce(per_anchor.mean(dim=1), self.reduction)


class MarginContrastiveLoss(nn.Module):
    """Contrastive loss of the public code (distance form; an option of stage 1).

    With ``f_bm`` a modality's feature, ``f+_bm`` the same modality's feature of the augmented input,
    ``M`` modalities and ``V`` the feature map's voxel count:

    ``L_bm = (1 / V) * ( ||f_bm - f+_bm||_2 - (1 / (M - 1)) * sum_{k != m} ||f_bm - f_bk||_2 )``

    and ``L_b = mean_m L_bm`` (feature units per voxel). Unbounded below: it keeps pushing the
    modalities apart, as in the public code.

    Args:
        reduction: over the batch.

    ``forward(features, positive_features)``: both ``(B, M, C, *spatial)`` or pooled ``(B, M, C)``
    (then ``V = 1``).
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, features: torch.Tensor, positive_features: torch.Tensor) -> torch.Tensor:
        _check_contrastive(features, positive_features, "MarginContrastiveLoss")
        b, m = features.shape[:2]
        f = features.reshape(b, m, -1)
        pull = torch.linalg.vector_norm(f - positive_features.reshape(b, m, -1), dim=2)  # (B, M)
        # Each of the M (M - 1) / 2 distances once, without materialising an (M, M, N) difference.
        pair = {(i, k): torch.linalg.vector_norm(f[:, i] - f[:, k], dim=1) for i in range(m) for k in range(i + 1, m)}
        push = torch.stack(
            [sum(pair[min(i, k), max(i, k)] for k in range(m) if k != i) for i in range(m)], dim=1
        ) / (m - 1)  # (B, M)
        per_anchor = (pull - push) / _voxels(features, first_spatial=3)
        return _reduce(per_anchor.mean(dim=1), self.reduction)


# --------------------------------------------------------------------------------------------
# Stage 2: fusion (FCD + GMN)
# --------------------------------------------------------------------------------------------


class FidelityLoss(nn.Module):
    """Fidelity of the fused volume to every source (stage 2, public code form).

    ``L_b = (1 / (D*H*W)) * mean_i || fused_b - x_bi ||_2`` (L2 norm, not squared, over the volume).

    ``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``, intensities in
    ``[0, 1]``. Returns intensity units per voxel.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "FidelityLoss")
        per_source = torch.linalg.vector_norm((fused - sources).flatten(2), dim=2)  # (B, M)
        return _reduce(per_source.mean(dim=1) / _voxels(fused), self.reduction)


class BrightnessLoss(nn.Module):
    """The "light" (brightness) loss: keep the fused volume as bright as the brightest source.

    ``L_b = (1 / (D*H*W)) * || fused_b - max_i x_bi ||_2`` with the maximum taken voxel-wise over the
    sources (public code weight 5).

    ``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "BrightnessLoss")
        brightest = sources.max(dim=1, keepdim=True).values
        return _reduce(_item_norm(fused - brightest) / _voxels(fused), self.reduction)


class SourceSSIMLoss(nn.Module):
    """Negative mean 3-D SSIM between the fused volume and the sources (stage 2).

    ``L_b = - mean_i SSIM(fused_b, x_bi)``, in ``[-1, 1]``, minimum ``-1`` when the fused volume equals
    every source. (The sign follows the public code's ``- 5 * SSIM``; MONAI's ``SSIMLoss`` returns
    ``1 - SSIM``, which differs by the constant 1.)

    SSIM is the one of ``monai.losses.SSIMLoss(spatial_dims=3)``: Gaussian window ``win_size`` (11)
    with ``sigma`` 1.5, ``k1 = 0.01``, ``k2 = 0.03``, ``data_range`` 1, population (biased)
    variances, averaged over the voxels whose whole window lies inside the volume ("valid"
    region). This equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``, which also averages over that interior. The public
    code's SSIM3D instead zero-pads and averages over every voxel, so it differs near the borders.

    Speed: MONAI's ``SSIMLoss`` convolves with the full ``11^3`` kernel (1331 taps, and a slow
    grouped 3-D convolution on CPU). The Gaussian is separable, so the five local statistics
    (means, variances, covariance) of all sources are filtered here in one call of MONAI's
    ``separable_filtering`` (3 x 11 taps) and cropped to the valid region: the same numbers
    (tested against ``SSIMLoss`` to 1e-5) for about 1/40 of the work. Computed in float32.

    ``forward(fused, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)`` in ``[0, data_range]``;
    every spatial size must be at least ``win_size``.
    """

    def __init__(
        self, win_size: int = 11, sigma: float = 1.5, data_range: float = 1.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.win_size = win_size
        self.c1 = (0.01 * data_range) ** 2
        self.c2 = (0.03 * data_range) ** 2
        offsets = torch.arange((1 - win_size) / 2, (1 + win_size) / 2, 1.0)
        gauss = torch.exp(-((offsets / sigma) ** 2) / 2)
        self.register_buffer("kernel", gauss / gauss.sum(), persistent=False)

    def forward(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(fused, sources, "SourceSSIMLoss")
        if min(fused.shape[2:]) < self.win_size:
            raise ValueError(
                f"SourceSSIMLoss needs every spatial size >= {self.win_size}, got {tuple(fused.shape[2:])}."
            )
        f = fused.float().expand_as(sources)
        x = sources.float()
        stats = torch.cat((f, x, f * f, x * x, f * x), dim=1)  # (B, 5M, D, H, W)
        kernel = self.kernel.to(stats.device)
        filtered = separable_filtering(stats, [kernel] * 3)  # zero-padded "same" output
        r = self.win_size // 2
        if r:
            filtered = filtered[..., r:-r, r:-r, r:-r]  # the valid region, as SSIMLoss
        mu_f, mu_x, ff, xx, fx = filtered.chunk(5, dim=1)
        var_f, var_x, cov = ff - mu_f**2, xx - mu_x**2, fx - mu_f * mu_x
        ssim = ((2 * mu_f * mu_x + self.c1) * (2 * cov + self.c2)) / (
            (mu_f**2 + mu_x**2 + self.c1) * (var_f + var_x + self.c2)
        )
        return _reduce(-ssim.flatten(1).mean(dim=1), self.reduction)


class SourceLNCCLoss(nn.Module):
    """Local NCC between the GMN-warped fused volume and each source (stage 2 registration term).

    ``L_b = mean_i LNCC(warped_b, x_bi)`` where ``LNCC`` is
    ``monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=9)`` (rectangular
    9^3 window, zero padding, same-size output): the NEGATIVE local squared zero-normalised
    cross-correlation averaged over voxels, in ``[-1, 0]``, ``-1`` for perfectly (locally linearly)
    matching images. The public code's ``ncc_loss`` returns ``1 - mean(cc^2)``, i.e. ``1 +`` this
    value up to its epsilon (``1e-7`` added to the variance product; MONAI clamps each local
    variance at ``smooth_dr = 1e-5``), so gradients are the same.

    ``forward(warped, sources)``: ``(B, 1, D, H, W)`` and ``(B, M, D, H, W)``; dimensionless.
    """

    def __init__(self, kernel_size: int = 9, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=kernel_size, reduction="none")

    def forward(self, warped: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        _check_fused_sources(warped, sources, "SourceLNCCLoss")
        # Channel-wise filtering: channel i compares warped with source i.
        negative_ncc = self.lncc(warped.expand_as(sources), sources)  # (B, M, D, H, W)
        return _reduce(negative_ncc.flatten(1).mean(dim=1), self.reduction)


class DVFSmoothnessLoss(nn.Module):
    """Smoothness of the displacement field: mean squared finite differences (stage 2).

    ``L_b = mean_{direction d, component c, voxel} (d u_c / d d) ** 2`` over the three spatial
    directions and the three DVF components, in voxels^2 per voxel^2 (dimensionless for a DVF in
    voxels). For a linear ramp ``u_c = a * z`` in one component it is ``a^2 / 9``.

    * ``difference="central"`` (default): ``monai.losses.DiffusionLoss``, which uses central
      differences ``(u[i+1] - u[i-1]) / 2`` on interior voxels and SUMS the three directions; it is
      divided by 3 here to make it the mean over directions. Central differences do not see a
      one-voxel checkerboard.
    * ``difference="forward"``: forward differences ``u[i+1] - u[i]``, each direction averaged over
      its own voxels, then averaged over directions: the public code's ``gradient_loss``.

    ``forward(dvf)``: ``(B, 3, D, H, W)`` (channels along ``(z, y, x)``, voxel units); every spatial
    size must exceed 2.
    """

    def __init__(self, difference: Literal["central", "forward"] = "central", reduction: Reduction = "mean") -> None:
        super().__init__()
        if difference not in ("central", "forward"):
            raise ValueError(f'DVFSmoothnessLoss difference must be "central" or "forward", got {difference!r}.')
        self.difference = difference
        self.reduction = _check_reduction(reduction)
        self.diffusion = DiffusionLoss(reduction="none")

    def forward(self, dvf: torch.Tensor) -> torch.Tensor:
        if dvf.ndim != 5 or dvf.shape[1] != 3:
            raise ValueError(f"DVFSmoothnessLoss expects a DVF of shape (B, 3, D, H, W), got {tuple(dvf.shape)}.")
        if self.difference == "forward":
            per_direction = [dvf.diff(dim=axis).pow(2).flatten(1).mean(dim=1) for axis in (2, 3, 4)]  # (B,) each
            per_item = torch.stack(per_direction, dim=1).mean(dim=1)
        else:
            with warnings.catch_warnings():  # MONAI indexes with a list; torch warns about it
                warnings.simplefilter("ignore", UserWarning)
                summed = self.diffusion(dvf)  # (B, 3, D-2, H-2, W-2), summed over directions
            per_item = summed.flatten(1).mean(dim=1) / 3
        return _reduce(per_item, self.reduction)


# --------------------------------------------------------------------------------------------
# Stage 3: segmentation (FSD)
# --------------------------------------------------------------------------------------------


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if logits.ndim != 5 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"{name} expects logits (B, C, D, H, W) and int64 labels (B, D, H, W), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}."
        )


class WeightedCrossEntropyLoss(nn.Module):
    """Class-weighted cross-entropy (stage 3): ``torch.nn.functional.cross_entropy(..., weight=w)``.

    ``L = sum_v w_{y_v} * (-log softmax(logits_v)[y_v]) / sum_v w_{y_v}`` over all voxels ``v`` of
    the batch (torch's weighted mean) for ``reduction="mean"``; ``"sum"`` drops the denominator;
    ``"none"`` returns ``(B, D, H, W)``. Default weights 0.2, 0.3, 0.25, 0.25 (background, NCR,
    edema, ET), as in the public code.

    ``forward(logits, labels)``: ``(B, C, D, H, W)`` float and ``(B, D, H, W)`` int64 in ``[0, C)``.
    Returns nats.
    """

    class_weights: torch.Tensor

    def __init__(self, class_weights: Sequence[float] = CLASS_WEIGHTS, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_logits_labels(logits, labels, "WeightedCrossEntropyLoss")
        if logits.shape[1] != self.class_weights.numel():
            raise ValueError(f"Got {logits.shape[1]} classes but {self.class_weights.numel()} class weights.")
        weight = self.class_weights.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, labels, weight=weight, reduction=self.reduction)


class ForegroundDiceLoss(nn.Module):
    """``1 - soft Dice`` over the foreground classes (stage 3), on softmax probabilities.

    With ``p`` the softmax of the logits and ``g`` the one-hot labels, restricted to classes
    ``1..C-1``:

    * ``average="pooled"`` (public code, default): one Dice over all foreground classes, batch
      items and voxels together: ``L = 1 - 2 * sum(p * g) / (sum(p) + sum(g) + smooth)``, with
      ``smooth = 0.01``;
    * ``average="class"``: one Dice per foreground class over the batch, averaged over classes:
      ``L = mean_c [1 - (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)]``.

    Both are ``monai.losses.DiceLoss(batch=True)`` (the pooled form on the foreground flattened into
    one channel, with ``smooth_nr = 0``, ``smooth_dr = smooth``). The result is a scalar for the
    whole batch (no per-item reduction), dimensionless in ``[0, 1]``.

    ``forward(logits, labels)``: ``(B, C, D, H, W)`` and int64 ``(B, D, H, W)`` in ``[0, C)``.
    """

    def __init__(self, average: Literal["pooled", "class"] = "pooled", smooth: float | None = None) -> None:
        super().__init__()
        if average not in ("pooled", "class"):
            raise ValueError(f'ForegroundDiceLoss average must be "pooled" or "class", got {average!r}.')
        self.average = average
        if average == "pooled":
            self.dice = DiceLoss(batch=True, smooth_nr=0.0, smooth_dr=0.01 if smooth is None else smooth)
        else:
            s = 1e-5 if smooth is None else smooth
            self.dice = DiceLoss(batch=True, smooth_nr=s, smooth_dr=s)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_logits_labels(logits, labels, "ForegroundDiceLoss")
        num_classes = logits.shape[1]
        probabilities = logits.softmax(dim=1)[:, 1:]
        one_hot = F.one_hot(labels, num_classes).movedim(-1, 1)[:, 1:].to(probabilities.dtype)
        if self.average == "pooled":
            return self.dice(probabilities.reshape(1, 1, -1), one_hot.reshape(1, 1, -1))
        return self.dice(probabilities, one_hot)


# --------------------------------------------------------------------------------------------
# Composite per-stage losses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage1LossWeights:
    """Weights of the stage-1 terms (0 skips a term). The public code trains on reconstruction
    alone; the paper adds the contrastive term."""

    reconstruction: float = 1.0
    contrastive: float = 1.0


@dataclass(frozen=True)
class Stage2LossWeights:
    """Weights of the stage-2 terms (public code: 1, 5, 5, 1, 1; 0 skips a term). Set ``ncc`` and
    ``smooth`` to 0 for the configuration without GMN."""

    fidelity: float = 1.0
    light: float = 5.0
    ssim: float = 5.0
    ncc: float = 1.0
    smooth: float = 1.0


@dataclass(frozen=True)
class Stage3LossWeights:
    """Weights of the stage-3 terms (paper and public code: 0.5 each; 0 skips a term)."""

    ce: float = 0.5
    dice: float = 0.5


def _weighted_total(terms: dict[str, torch.Tensor], weights: object, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Add ``"total" = sum(weight * term)`` to ``terms`` (zero when every weight is 0)."""
    total = like.new_zeros(())
    for name, value in terms.items():
        total = total + getattr(weights, name) * value
    terms["total"] = total
    return terms


def _active(weights: object) -> list[str]:
    return [f.name for f in fields(weights) if getattr(weights, f.name) != 0]  # type: ignore[arg-type]


class Stage1Loss(nn.Module):
    """Stage 1 (CU-Net pre-training): ``reconstruction`` + ``contrastive``.

    Args:
        weights: :class:`Stage1LossWeights`.
        reconstruction: form of :class:`ReconstructionLoss` (``"norm"``, public; or ``"mse"``).
        contrastive: ``"infonce"`` (:class:`InfoNCEContrastiveLoss`, paper, default) or ``"margin"``
            (:class:`MarginContrastiveLoss`, public code).
        temperature: InfoNCE temperature.

    ``forward(x, reconstruction, features=None, positive_features=None)``:

    * ``x``, ``reconstruction``: ``(B, 4, D, H, W)`` (CU-Net ``reconstruction`` of ``x``);
    * ``features``, ``positive_features``: ``(B, 4, C, *spatial)`` CU-Net features of ``x`` and of
      ``intensity_noise_augment(x)`` (which feature, global or local, is the caller's choice);
      required when the contrastive weight is not 0.

    Returns ``{"reconstruction", "contrastive", "total"}`` (scalars, batch-averaged), without the
    terms whose weight is 0.
    """

    def __init__(
        self,
        weights: Stage1LossWeights = Stage1LossWeights(),
        reconstruction: Literal["norm", "mse"] = "norm",
        contrastive: Literal["infonce", "margin"] = "infonce",
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.weights = weights
        self.reconstruction = ReconstructionLoss(form=reconstruction)
        if contrastive == "infonce":
            self.contrastive: nn.Module = InfoNCEContrastiveLoss(temperature=temperature)
        elif contrastive == "margin":
            self.contrastive = MarginContrastiveLoss()
        else:
            raise ValueError(f'Stage1Loss contrastive must be "infonce" or "margin", got {contrastive!r}.')

    def forward(
        self,
        x: torch.Tensor,
        reconstruction: torch.Tensor,
        features: torch.Tensor | None = None,
        positive_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        active = _active(self.weights)
        if "reconstruction" in active:
            terms["reconstruction"] = self.reconstruction(reconstruction, x)
        if "contrastive" in active:
            if features is None or positive_features is None:
                raise ValueError(
                    "Stage1Loss needs features and positive_features for its contrastive term; "
                    "pass them or set Stage1LossWeights(contrastive=0)."
                )
            terms["contrastive"] = self.contrastive(features, positive_features)
        return _weighted_total(terms, self.weights, x)


class Stage2Loss(nn.Module):
    """Stage 2 (fusion): ``fidelity + 5 light + 5 ssim + ncc + smooth`` (default weights).

    Terms: ``fidelity`` :class:`FidelityLoss`, ``light`` :class:`BrightnessLoss`, ``ssim``
    :class:`SourceSSIMLoss` (``-mean SSIM``, so the total may be negative), ``ncc``
    :class:`SourceLNCCLoss` (negative squared local NCC of the GMN-warped fused volume), ``smooth``
    :class:`DVFSmoothnessLoss`.

    Args:
        weights: :class:`Stage2LossWeights`.
        ssim_window: SSIM Gaussian window (11).
        ncc_window: LNCC window (9).
        smooth_difference: ``"central"`` (MONAI DiffusionLoss) or ``"forward"`` (public code).

    ``forward(x, fused, warped=None, dvf=None)``: ``x`` ``(B, 4, D, H, W)``; ``fused`` and ``warped``
    ``(B, 1, D, H, W)`` (``NSLFOutput.fusion.fused``, ``NSLFOutput.registration.warped``); ``dvf``
    ``(B, 3, D, H, W)`` (``NSLFOutput.registration.dvf``). ``warped`` / ``dvf`` are required when
    the ``ncc`` / ``smooth`` weights are not 0.

    Returns ``{"fidelity", "light", "ssim", "ncc", "smooth", "total"}`` (scalars), without the terms
    whose weight is 0.
    """

    def __init__(
        self,
        weights: Stage2LossWeights = Stage2LossWeights(),
        ssim_window: int = 11,
        ncc_window: int = 9,
        smooth_difference: Literal["central", "forward"] = "central",
    ) -> None:
        super().__init__()
        self.weights = weights
        self.fidelity = FidelityLoss()
        self.light = BrightnessLoss()
        self.ssim = SourceSSIMLoss(win_size=ssim_window)
        self.ncc = SourceLNCCLoss(kernel_size=ncc_window)
        self.smooth = DVFSmoothnessLoss(difference=smooth_difference)

    def forward(
        self,
        x: torch.Tensor,
        fused: torch.Tensor,
        warped: torch.Tensor | None = None,
        dvf: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        active = _active(self.weights)
        for name in ("fidelity", "light", "ssim"):
            if name in active:
                terms[name] = getattr(self, name)(fused, x)
        if "ncc" in active:
            if warped is None:
                raise ValueError("Stage2Loss needs the GMN-warped fused volume for its ncc term; pass it or set ncc=0.")
            terms["ncc"] = self.ncc(warped, x)
        if "smooth" in active:
            if dvf is None:
                raise ValueError(
                    "Stage2Loss needs the GMN displacement field for its smooth term; pass it or set smooth=0."
                )
            terms["smooth"] = self.smooth(dvf)
        return _weighted_total(terms, self.weights, fused)


class Stage3Loss(nn.Module):
    """Stage 3 (segmentation): ``0.5 * ce + 0.5 * dice`` (default weights).

    Terms: ``ce`` :class:`WeightedCrossEntropyLoss`, ``dice`` :class:`ForegroundDiceLoss`
    (``1 - soft Dice`` over the foreground classes).

    Args:
        weights: :class:`Stage3LossWeights`.
        class_weights: cross-entropy class weights (background, NCR, edema, ET).
        dice_average: ``"pooled"`` (public code) or ``"class"`` (see :class:`ForegroundDiceLoss`).

    ``forward(logits, labels)``: ``(B, 4, D, H, W)`` and int64 ``(B, D, H, W)``.
    Returns ``{"ce", "dice", "total"}`` (scalars), without the terms whose weight is 0.
    """

    def __init__(
        self,
        weights: Stage3LossWeights = Stage3LossWeights(),
        class_weights: Sequence[float] = CLASS_WEIGHTS,
        dice_average: Literal["pooled", "class"] = "pooled",
    ) -> None:
        super().__init__()
        self.weights = weights
        self.ce = WeightedCrossEntropyLoss(class_weights)
        self.dice = ForegroundDiceLoss(average=dice_average)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for name in _active(self.weights):
            terms[name] = getattr(self, name)(logits, labels)
        return _weighted_total(terms, self.weights, logits)
