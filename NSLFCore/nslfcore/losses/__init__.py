"""Loss functions of NSLF's three nested training stages (paper section "Nested training").

Low-level terms (each a small ``nn.Module`` callable on plain tensors), one family per module:

* stage 1 (CU-Net pre-training): :class:`ReconstructionLoss` (``reconstruction.py``),
  :class:`InfoNCEContrastiveLoss` (the paper's contrastive loss, default),
  :class:`MarginContrastiveLoss` (the public code's form) and :func:`intensity_noise_augment`, which
  makes the positive view (``contrastive.py``);
* stage 2 (fusion): :class:`FidelityLoss`, :class:`BrightnessLoss` ("light"), :class:`SourceSSIMLoss`
  (FCD, ``fusion.py``); :class:`SourceLNCCLoss`, :class:`DVFSmoothnessLoss` (GMN, ``registration.py``);
  beyond the paper, off by default: :class:`MaxGradientLoss` (``detail.py``) and
  :class:`ContrastPreservationLoss` (``contrast.py``: local contrast no lower than the sources');
* stage 3 (segmentation, FSD): :class:`WeightedCrossEntropyLoss`, :class:`ForegroundDiceLoss`
  (class outputs), :class:`RegionBCELoss`, :class:`RegionDiceLoss` (region outputs; ``segmentation.py``).

Composites :class:`Stage1Loss`, :class:`Stage2Loss` and :class:`Stage3Loss` (``stages.py``) weight the
terms with a small dataclass (:class:`Stage1LossWeights`, ..., ``weights.py``) and return
``{term: tensor, ..., "total": tensor}`` with ``total = sum(weight * term)``; a term whose weight is 0
is neither computed nor reported. ``utils.py`` holds the reduction and shape checks the terms share.

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

from nslfcore.losses.contrast import ContrastPreservationLoss
from nslfcore.losses.contrastive import InfoNCEContrastiveLoss, MarginContrastiveLoss, intensity_noise_augment
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
from nslfcore.losses.stages import Stage1Loss, Stage2Loss, Stage3Loss
from nslfcore.losses.utils import Reduction
from nslfcore.losses.weights import Stage1LossWeights, Stage2LossWeights, Stage3LossWeights

__all__ = [
    "Reduction",
    "CLASS_WEIGHTS",
    "intensity_noise_augment",
    "ReconstructionLoss",
    "InfoNCEContrastiveLoss",
    "MarginContrastiveLoss",
    "FidelityLoss",
    "MaxGradientLoss",
    "ContrastPreservationLoss",
    "BrightnessLoss",
    "SourceSSIMLoss",
    "SourceLNCCLoss",
    "DVFSmoothnessLoss",
    "WeightedCrossEntropyLoss",
    "ForegroundDiceLoss",
    "RegionBCELoss",
    "RegionDiceLoss",
    "Stage1LossWeights",
    "Stage2LossWeights",
    "Stage3LossWeights",
    "Stage1Loss",
    "Stage2Loss",
    "Stage3Loss",
]
