"""Composite losses of NSLF's three nested training stages (paper section "Nested training").

:class:`Stage1Loss`, :class:`Stage2Loss` and :class:`Stage3Loss` each weight the terms of their
stage (:mod:`~nslfcore.losses.reconstruction`, :mod:`~nslfcore.losses.contrastive`,
:mod:`~nslfcore.losses.fusion`, :mod:`~nslfcore.losses.registration`,
:mod:`~nslfcore.losses.segmentation`) with a dataclass of :mod:`~nslfcore.losses.weights` and
return ``{term: tensor, ..., "total": tensor}`` with ``total = sum(weight * term)``; a term whose
weight is 0 is neither computed nor reported. Inputs are ``(B, C, D, H, W)`` with spatial axes
``(z, y, x)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import fields
from typing import Literal

import torch
from torch import nn

from nslfcore.config import SegmentationOutput
from nslfcore.losses.contrast import ContrastPreservationLoss
from nslfcore.losses.contrastive import InfoNCEContrastiveLoss, MarginContrastiveLoss
from nslfcore.losses.detail import MaxGradientLoss
from nslfcore.losses.fusion import BrightnessLoss, FidelityLoss, SourceSSIMLoss
from nslfcore.losses.reconstruction import ReconstructionLoss
from nslfcore.losses.registration import DVFSmoothnessLoss, SourceLNCCLoss
from nslfcore.losses.segmentation import (
    CLASS_WEIGHTS,
    ForegroundDiceLoss,
    RegionBCELoss,
    RegionDiceLoss,
    WeightedCrossEntropyLoss,
)
from nslfcore.losses.weights import Stage1LossWeights, Stage2LossWeights, Stage3LossWeights


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
    :class:`DVFSmoothnessLoss`; beyond the paper and off by default, ``detail``
    :class:`~nslfcore.losses.detail.MaxGradientLoss` and ``contrast``
    :class:`~nslfcore.losses.contrast.ContrastPreservationLoss` (its window is ``ssim_window``).

    Args:
        weights: :class:`Stage2LossWeights`.
        ssim_window: SSIM Gaussian window (11).
        ncc_window: LNCC window (9).
        smooth_difference: ``"central"`` (MONAI DiffusionLoss) or ``"forward"`` (public code).

    ``forward(x, fused, warped=None, dvf=None)``: ``x`` ``(B, 4, D, H, W)``; ``fused`` and ``warped``
    ``(B, 1, D, H, W)`` (``NSLFOutput.fusion.fused``, ``NSLFOutput.registration.warped``); ``dvf``
    ``(B, 3, D, H, W)`` (``NSLFOutput.registration.dvf``). ``warped`` / ``dvf`` are required when
    the ``ncc`` / ``smooth`` weights are not 0.

    Returns ``{"fidelity", "light", "ssim", "ncc", "smooth", "detail", "contrast", "total"}``
    (scalars), without the terms whose weight is 0.
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
        self.detail = MaxGradientLoss()
        self.contrast = ContrastPreservationLoss(win_size=ssim_window)

    def forward(
        self,
        x: torch.Tensor,
        fused: torch.Tensor,
        warped: torch.Tensor | None = None,
        dvf: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        active = _active(self.weights)
        for name in ("fidelity", "light", "ssim", "detail", "contrast"):
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

    Terms for class outputs: ``ce`` :class:`WeightedCrossEntropyLoss`, ``dice``
    :class:`ForegroundDiceLoss` (``1 - soft Dice`` over the foreground classes). For region outputs
    (WT, TC, ET sigmoids): ``ce`` :class:`RegionBCELoss`, ``dice`` :class:`RegionDiceLoss` (per
    region, averaged).

    Args:
        weights: :class:`Stage3LossWeights`.
        class_weights: cross-entropy class weights (background, NCR, edema, ET); class outputs only.
        dice_average: ``"pooled"`` (public code) or ``"class"`` (see :class:`ForegroundDiceLoss`);
            class outputs only.
        output: ``"classes"`` or ``"regions"`` (:attr:`nslfcore.config.NSLFConfig.segmentation_output`).

    Beyond the paper, ``fusion`` (weight 0 by default) keeps the fusion while the FCD fine-tunes: the
    stage-2 fusion terms of ``fusion_weights`` (:class:`Stage2Loss` without its GMN terms) on the fused
    volume, over the batch items that have all four sequences (a crop with a dropped sequence has no
    source to be faithful to in that channel).

    ``forward(logits, labels, x=None, fused=None)``: ``(B, 4, D, H, W)`` (``(B, 3, D, H, W)`` for regions)
    and int64 ``(B, D, H, W)``; ``x`` ``(B, 4, D, H, W)`` and ``fused`` ``(B, 1, D, H, W)`` are needed
    when the fusion weight is not 0. Returns ``{"ce", "dice", "fusion", "total"}`` (scalars), without
    the terms whose weight is 0.
    """

    def __init__(
        self,
        weights: Stage3LossWeights = Stage3LossWeights(),
        class_weights: Sequence[float] = CLASS_WEIGHTS,
        dice_average: Literal["pooled", "class"] = "pooled",
        output: SegmentationOutput = "classes",
        fusion_weights: Stage2LossWeights = Stage2LossWeights(),
    ) -> None:
        super().__init__()
        self.weights = weights
        self.fusion = Stage2Loss(dataclasses.replace(fusion_weights, ncc=0.0, smooth=0.0))
        regions = output == "regions"
        self.ce = RegionBCELoss() if regions else WeightedCrossEntropyLoss(class_weights)
        self.dice = RegionDiceLoss() if regions else ForegroundDiceLoss(average=dice_average)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor | None = None, fused: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for name in _active(self.weights):
            if name != "fusion":
                terms[name] = getattr(self, name)(logits, labels)
        if self.weights.fusion:
            if x is None or fused is None:
                raise ValueError("Stage3Loss needs the sources and the fused volume for its fusion term; pass x and fused.")
            complete = x.flatten(2).abs().amax(dim=2).gt(0).all(dim=1)  # items with all four sequences
            terms["fusion"] = (self.fusion(x[complete], fused[complete])["total"] if bool(complete.any())
                               else logits.new_zeros(()))  # fmt: skip
        return _weighted_total(terms, self.weights, logits)
