"""Contrastive losses of stage 1 (CU-Net pre-training) and the augmentation that makes their positives.

* :func:`intensity_noise_augment` -- the positive view: the same case with a random intensity
  change and noise per modality, geometry unchanged;
* :class:`InfoNCEContrastiveLoss` -- the paper's contrastive loss (default);
* :class:`MarginContrastiveLoss` -- the public code's distance form.

Features are CU-Net features ``(B, M, C, *spatial)`` (spatial ``(z, y, x)``) or pooled ``(B, M, C)``,
one per modality ``M`` in the order ``nslfcore.MODALITIES``; the other modalities of the same case
are the negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nslfcore.losses.utils import Reduction, _check_reduction, _reduce, _voxels


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
