"""How much to trust one case's segmentation: agreement between mirrored passes and entropy in the tumour.

Two numbers per case, both unitless in [0, 1]:

``agreement``
    the mean pairwise Dice of the whole-tumour (WT) masks of the mirrored passes
    (:mod:`~nslfcore.inference.mirroring`), inside the brain; 1 when every pass segments the same
    voxels. Pairwise rather than each pass against the mean: it does not depend on how the passes
    are combined, and with two passes (``"lr"``) it is simply their Dice. Two empty masks agree
    (Dice 1, :func:`~nslfcore.metrics.segmentation.overlap_metrics`). ``None`` with one pass
    (``mirror="none"``): there is nothing to compare.
``mean_entropy``
    the mean over the voxels of the predicted WT of the entropy of the four class probabilities
    (background, NCR, ED, ET), divided by ``log 4``: 0 where the network is certain, 1 where the
    four classes are equally likely. 0 when no tumour is predicted.

A case is ``low`` when the agreement is below :data:`MIN_AGREEMENT` or the mean entropy above
:data:`MAX_MEAN_ENTROPY`; its :attr:`Confidence.warning` says so in one sentence. The thresholds sit
between the shipped model on a held-out phantom case (``benchmarks/results/mirroring_cost.json``:
Dice WT 0.92, agreement 0.95 with ``"lr"`` and 0.93 with ``"all"``, mean entropy 0.13 to 0.16) and
a network that knows nothing (random logits: agreement about 0.75, mean entropy above 0.8); one
case, so they are a first setting, to be revisited on real scans.

Arrays are ``(z, y, x)`` on one grid (the brain box); probabilities ``(4, z, y, x)``.

Example:
    >>> import torch
    >>> certain = torch.zeros(4, 2, 2, 2); certain[2] = 1.0  # edema everywhere, probability 1
    >>> brain = torch.ones(2, 2, 2, dtype=torch.bool)
    >>> measure_confidence(certain, [brain, brain], brain)
    Confidence(agreement=1.0, mean_entropy=0.0, passes=2, tumour_voxels=8)
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nslfcore.metrics.segmentation import overlap_metrics

#: Below this agreement (mean pairwise Dice WT of the mirrored passes) a case's confidence is low.
MIN_AGREEMENT = 0.9
#: Above this mean normalised entropy in the predicted tumour a case's confidence is low.
MAX_MEAN_ENTROPY = 0.5
#: The file ``nslf run`` writes beside the label map.
CONFIDENCE_NAME = "confidence.json"


@dataclass(frozen=True)
class Confidence:
    """One case's confidence (see the module docstring): ``agreement`` in [0, 1] or ``None`` (one pass),
    ``mean_entropy`` in [0, 1], the number of ``passes`` and of ``tumour_voxels`` (predicted WT)."""

    agreement: float | None
    mean_entropy: float
    passes: int
    tumour_voxels: int

    @property
    def low(self) -> bool:
        """Agreement below :data:`MIN_AGREEMENT` or mean entropy above :data:`MAX_MEAN_ENTROPY`."""
        disagree = self.agreement is not None and self.agreement < MIN_AGREEMENT
        return disagree or self.mean_entropy > MAX_MEAN_ENTROPY

    @property
    def warning(self) -> str:
        """One plain sentence when :attr:`low`, else ``""``."""
        if not self.low:
            return ""
        reasons = []
        if self.agreement is not None and self.agreement < MIN_AGREEMENT:
            reasons.append(f"mirrored passes agree only to Dice {self.agreement:.2f}")
        if self.mean_entropy > MAX_MEAN_ENTROPY:
            reasons.append(f"the network is unsure inside the tumour (entropy {self.mean_entropy:.2f})")
        return f"Low confidence: {' and '.join(reasons)}; check the segmentation by eye before using it."

    def summary(self) -> str:
        """One line for a terminal or a panel, e.g. ``agreement 0.98 (2 mirrored passes), entropy 0.12 in the tumour``."""
        agreement = f"agreement {self.agreement:.2f} ({self.passes} mirrored passes)" if self.agreement is not None \
            else "agreement not measured (no mirroring)"  # fmt: skip
        return f"{agreement}, mean entropy {self.mean_entropy:.2f} in the predicted tumour ({self.tumour_voxels} voxels)"

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``low`` and ``warning`` and the thresholds, as :data:`CONFIDENCE_NAME` holds them."""
        return {**asdict(self), "low": self.low, "warning": self.warning,
                "min_agreement": MIN_AGREEMENT, "max_mean_entropy": MAX_MEAN_ENTROPY}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Confidence:
        """The confidence of :meth:`to_dict`'s dictionary (other keys are ignored)."""
        agreement = values.get("agreement")
        return cls(None if agreement is None else float(agreement), float(values["mean_entropy"]), int(values["passes"]),
                   int(values["tumour_voxels"]))  # fmt: skip


def read_confidence(path: str | Path) -> Confidence | None:
    """The confidence in a :data:`CONFIDENCE_NAME` file, or ``None`` when it is missing or unreadable."""
    try:
        return Confidence.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def normalised_entropy(probabilities: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """Entropy of class probabilities over ``channel_dim``, divided by the log of the number of classes: [0, 1]."""
    classes = probabilities.shape[channel_dim]
    return torch.special.entr(probabilities.clamp(0.0, 1.0)).sum(dim=channel_dim) / math.log(classes)


def mean_pairwise_dice(masks: list[torch.Tensor], roi: torch.Tensor) -> float | None:
    """Mean Dice over every pair of boolean masks ``(z, y, x)`` inside ``roi``; ``None`` for fewer than two."""
    if len(masks) < 2:
        return None
    arrays, inside = [np.asarray(m.numpy(), dtype=bool) for m in masks], np.asarray(roi.numpy(), dtype=bool)
    return float(np.mean([overlap_metrics(a, b, inside)["dice"] for a, b in itertools.combinations(arrays, 2)]))


def measure_confidence(probabilities: torch.Tensor, whole_tumour: list[torch.Tensor], brain: torch.Tensor,
                       tumour: torch.Tensor | None = None) -> Confidence:  # fmt: skip
    """The :class:`Confidence` of one case.

    Args:
        probabilities: the final (mean) class probabilities ``(4, z, y, x)``.
        whole_tumour: each pass's WT mask ``(z, y, x)`` (bool), one per pass.
        brain: the brain mask ``(z, y, x)`` (bool); agreement and entropy count only voxels inside it.
        tumour: the final predicted WT ``(z, y, x)`` (bool); default: the most probable class is not background.
    """
    if tumour is None:
        tumour = probabilities.argmax(dim=0) > 0
    inside = tumour & brain
    voxels = int(inside.sum())
    entropy = float(normalised_entropy(probabilities[:, inside]).mean()) if voxels else 0.0
    return Confidence(mean_pairwise_dice(whole_tumour, brain), entropy, max(len(whole_tumour), 1), voxels)
