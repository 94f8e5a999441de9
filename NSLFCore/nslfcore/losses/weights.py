"""Weights of the per-stage loss terms: one frozen dataclass per stage.

:class:`Stage1LossWeights`, :class:`Stage2LossWeights` and :class:`Stage3LossWeights` have one field
per term (the field name is the term's key in the composite's result); a weight of 0 skips the
term. Defaults are the public code's.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    #: Beyond the paper (issue 16 point 7): :class:`~nslfcore.losses.detail.MaxGradientLoss`; 0 = off (the paper).
    detail: float = 0.0
    #: Beyond the paper (issue 31 point 5): :class:`~nslfcore.losses.contrast.ContrastPreservationLoss`; 0 = off.
    contrast: float = 0.0


@dataclass(frozen=True)
class Stage3LossWeights:
    """Weights of the stage-3 terms (paper and public code: 0.5 each; 0 skips a term)."""

    ce: float = 0.5
    dice: float = 0.5
    #: Beyond the paper (issue 31 point 2): the stage-2 fusion terms (fidelity, light, SSIM and the
    #: contrast term, with their stage-2 weights; no GMN) on the fused volume, so that fine-tuning the
    #: FCD for segmentation keeps the fusion; 0 = off (the paper).
    fusion: float = 0.0
