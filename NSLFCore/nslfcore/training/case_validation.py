"""Whole-case validation: the Dice of ET, TC and WT that users get from a model on whole validation cases.

Stage 3's crop Dice (:func:`~nslfcore.training.stages.region_dice`) scores the network on one
centre crop per case; users run it on the whole brain box through the inference engine. This
module runs exactly that pass on preprocessed validation cases --
:func:`~nslfcore.inference.strategies.infer_with_fallback` (whole volume, one modality at a time
or MONAI sliding windows, as ``nslf run`` chooses them), background outside the brain, labels of
the probabilities --
and scores the label map per BraTS region (:data:`nslfcore.data.labels.REGIONS`) with
:func:`~nslfcore.metrics.segmentation.overlap_metrics`: both masks empty -> Dice 1, an empty
reference with a non-empty prediction -> 0. The brain box holds every tumour voxel and the
pipeline predicts background outside it, so the Dice on the box is the Dice on the input grid.

The trainer calls :func:`case_validation` every ``TrainingOptions.case_validation_every`` epochs
of stage 3 and selects that stage's best epoch on the mean of the three regions.

Example::

    >>> metrics = case_validation(model, valid_set, torch.device("cpu"))
    >>> sorted(metrics)
    ['case_dice_et', 'case_dice_tc', 'case_dice_wt', 'case_validation_s']
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import numpy as np
import torch

from nslfcore.data.dataset import BratsCropDataset
from nslfcore.data.labels import REGIONS, region_mask
from nslfcore.data.transforms import PreprocessedCase, brain_mask
from nslfcore.distributed import DistributedContext
from nslfcore.inference.precision import Precision
from nslfcore.inference.strategies import DEFAULT_ROI, infer_with_fallback
from nslfcore.metrics.segmentation import overlap_metrics
from nslfcore.metrics.utils import Array
from nslfcore.models import Network
from nslfcore.models.outputs import labels_from_probabilities

#: The validation-event keys of the per-region means, by region.
CASE_DICE_KEYS: dict[str, str] = {region: f"case_dice_{region.lower()}" for region in REGIONS}


def case_dice(pred_labels: Array, ref_labels: Array) -> dict[str, float]:
    """Dice per BraTS region, ``{"ET": d, "TC": d, "WT": d}``, of two internal label maps ``(z, y, x)``.

    Labels are internal classes 0-3 (:mod:`nslfcore.data.labels`); empty regions follow
    :func:`~nslfcore.metrics.segmentation.overlap_metrics` (both empty -> 1, reference only empty -> 0).
    """
    pred, ref = np.asarray(pred_labels), np.asarray(ref_labels)
    return {region: overlap_metrics(region_mask(pred, region), region_mask(ref, region))["dice"] for region in REGIONS}


def predict_labels(model: Network, image: np.ndarray, device: torch.device, precision: Precision = "fp32") -> np.ndarray:
    """Internal labels uint8 ``(z, y, x)`` of a preprocessed ``(4, z, y, x)`` brain box, as ``nslf run`` makes them.

    The engine's pass with ``nslf run``'s defaults (mode ``auto``, windows
    :data:`~nslfcore.inference.strategies.DEFAULT_ROI`, overlap 0.5) in ``precision``, then
    background outside the brain (every modality 0; on the ``[0, 1]`` normalisations this is the
    pipeline's mask of the raw intensities) and the labels of the probabilities
    (:func:`~nslfcore.models.outputs.labels_from_probabilities`: the most probable class, or the
    nested regions of a region-output network).
    """
    _, probs, _, _ = infer_with_fallback(model, image, device, "auto", DEFAULT_ROI, (0.5, 0.5, 0.5), True,
                                         lambda fraction, message: None, precision)  # fmt: skip
    assert probs is not None, "a segmenting network returns probabilities"
    labels = labels_from_probabilities(probs, model.segmentation_output, channel_dim=0).numpy().astype(np.uint8)
    labels[~brain_mask(image)] = 0
    return labels


def whole_case_dice(
    model: Network, cases: Iterable[PreprocessedCase], device: torch.device, precision: Precision = "fp32"
) -> list[dict[str, float]]:
    """:func:`case_dice` of :func:`predict_labels` for each case (``image`` ``(4, z, y, x)``, ``label`` ``(z, y, x)``)."""
    scores = []
    for case in cases:
        if case.label is None:
            raise ValueError(f"Validation case {case.name} has no label map; whole-case validation needs one per case.")
        scores.append(case_dice(predict_labels(model, case.image, device, precision), case.label))
    return scores


def case_validation(
    model: Network,
    dataset: BratsCropDataset,
    device: torch.device,
    precision: Precision = "fp32",
    max_cases: int = 8,
    context: DistributedContext = DistributedContext(),
) -> dict[str, float]:
    """Mean whole-case Dice per region over the first ``max_cases`` cases of a validation dataset.

    Args:
        model: the network being trained (on ``device``); it runs in eval mode and gets its train
            mode and device back afterwards (the engine may fall back to the CPU when memory runs out).
        dataset: the validation :class:`~nslfcore.data.dataset.BratsCropDataset`; its cases come
            preprocessed (and possibly memory-mapped) from its :class:`~nslfcore.data.cache.CaseCache`.
        device: where the network runs.
        precision: ``"fp32"``, or ``"bf16"`` (autocast; the trainer's ``amp`` on CUDA).
        max_cases: cap on the cases scored (the first ones, in dataset order).
        context: the cases are shared out over the ranks and the scores gathered, so every rank
            returns the same numbers.

    Returns:
        ``{"case_dice_et", "case_dice_tc", "case_dice_wt"}`` (means over the cases, in ``[0, 1]``)
        and ``"case_validation_s"`` (this rank's wall-clock seconds).
    """
    if not isinstance(dataset, BratsCropDataset):
        raise TypeError(f"Whole-case validation reads its cases from a BratsCropDataset, not {type(dataset).__name__}.")
    clock = time.perf_counter()
    mine = dataset.cases[:max_cases][context.rank :: context.world_size]
    module = cast(torch.nn.Module, model)  # a Network is a module
    training, home = module.training, next(module.parameters()).device
    module.eval()
    try:
        scores = whole_case_dice(model, (dataset.cache.get(case) for case in mine), device, precision)
    finally:
        module.to(home, memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        module.train(training)
    every = [score for part in context.gather(scores) for score in part]
    metrics = {key: float(np.mean([score[region] for score in every])) for region, key in CASE_DICE_KEYS.items()}
    return metrics | {"case_validation_s": time.perf_counter() - clock}
