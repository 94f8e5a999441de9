"""Test-time mirroring: the network on flipped copies of the brain box, the class probabilities averaged.

As nnU-Net and MONAI do at inference, each pass flips the ``(4, z, y, x)`` box along some spatial
axes, runs the network (a :data:`Pass`: :func:`~nslfcore.inference.strategies.infer_with_fallback`,
whole volume, one modality at a time or sliding windows), flips the class probabilities back and adds them up;
the result is their mean. Mirroring choices (:data:`MIRRORS`):

``"none"``
    one pass, the identity (bit-identical to inference without mirroring).
``"lr"``
    the identity and the flip of the x axis (the last array axis): left-right for volumes whose
    grid is aligned with LPS / RAS, where the brain is nearly symmetric. Two passes.
``"all"``
    the identity and the seven flips of every combination of z, y and x, nnU-Net's mirroring.
    Eight passes.

The fused volume is the identity pass's (flipping does not change what fusion should give, and one
fused volume is what a user looks at). Each pass's whole-tumour mask is kept for the agreement of
:mod:`~nslfcore.inference.confidence`. The time grows with the number of passes:
``benchmarks/mirroring_cost.py`` measures it.

Arrays and tensors are ``(z, y, x)`` (spatial axes 0, 1, 2), class probabilities ``(4, z, y, x)``.

Example:
    >>> mirror_axes("lr")
    [(), (2,)]
    >>> len(mirror_axes("all"))
    8
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from nslfcore.config import SegmentationOutput
from nslfcore.inference.strategies import Progress
from nslfcore.models.outputs import labels_from_probabilities

Mirror = Literal["none", "lr", "all"]
#: The mirroring choices, in order of cost (1, 2 and 8 network passes).
MIRRORS: tuple[str, ...] = ("none", "lr", "all")
#: What ``nslf run``, the Slicer module and :func:`nslfcore.inference.run` use unless told otherwise:
#: ``"lr"`` doubles the network time on the CPU (``benchmarks/results/mirroring_cost.json``), beyond the 1.2x budget.
DEFAULT_MIRROR: Mirror = "none"
#: One network pass: ``infer(image (4, z, y, x), mode, device, progress) -> (fused, probabilities, mode, device)``,
#: :func:`~nslfcore.inference.strategies.infer_with_fallback` with the network and its other arguments bound.
PassOutput = tuple[torch.Tensor | None, torch.Tensor | None, str, torch.device]
Pass = Callable[[np.ndarray, str, torch.device, Progress], PassOutput]


def check_mirror(mirror: str) -> Mirror:
    """``mirror`` if it is one of :data:`MIRRORS`; otherwise ``ValueError`` naming the choices."""
    if mirror not in MIRRORS:
        raise ValueError(f"mirror must be 'none', 'lr' or 'all', got {mirror!r}.")
    return mirror  # type: ignore[return-value]


def mirror_axes(mirror: str) -> list[tuple[int, ...]]:
    """The spatial axes (0 z, 1 y, 2 x) each pass flips, the identity ``()`` first."""
    mirror = check_mirror(mirror)
    if mirror == "none":
        return [()]
    if mirror == "lr":
        return [(), (2,)]
    return [axes for size in range(4) for axes in itertools.combinations((2, 1, 0), size)]


def flip(array: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """``array`` ``(..., z, y, x)`` flipped along the spatial ``axes`` (0 z, 1 y, 2 x); its own inverse."""
    return torch.flip(array, [axis - 3 for axis in axes]) if axes else array


@dataclass
class MirroredOutput:
    """What the mirrored passes give, on the CPU.

    Attributes:
        fused: the identity pass's fused volume ``(z, y, x)``, or ``None``.
        probabilities: the mean class probabilities ``(4, z, y, x)`` of the passes, or ``None``.
        whole_tumour: each pass's whole-tumour mask ``(z, y, x)`` (bool, labels of its own
            probabilities > 0), identity first; empty without probabilities.
        mode, device: those the last pass ran with (after any memory fallback).
    """

    fused: torch.Tensor | None
    probabilities: torch.Tensor | None
    mode: str
    device: torch.device
    whole_tumour: list[torch.Tensor] = field(default_factory=list)


def mirrored_inference(
    infer: Pass,
    image: np.ndarray,
    mode: str,
    device: torch.device,
    segmentation_output: SegmentationOutput,
    progress: Progress,
    mirror: str = "none",
) -> MirroredOutput:
    """One pass of ``infer`` on the ``(4, z, y, x)`` box and on each of its flips (:func:`mirror_axes`); probabilities averaged.

    Args:
        infer: one pass (:data:`Pass`); a pass after the first starts from the mode and device the
            previous one ended with.
        image: the preprocessed brain box ``(4, z, y, x)``.
        mode, device: where the first pass starts (``"auto"`` is resolved by ``infer``).
        segmentation_output: the network's output mode, for the labels of each pass's probabilities.
        progress: ``progress(fraction, message)``, from 0.1 to 0.9 over all passes.
        mirror: ``"none"``, ``"lr"`` or ``"all"``.
    """
    passes = mirror_axes(mirror)
    out = MirroredOutput(None, None, mode, device)
    for index, axes in enumerate(passes):

        def report(fraction: float, message: str, index: int = index) -> None:
            within = min(max((fraction - 0.1) / 0.8, 0.0), 1.0)
            suffix = f" (mirrored pass {index + 1}/{len(passes)})" if len(passes) > 1 else ""
            progress(0.1 + 0.8 * (index + within) / len(passes), message + suffix)

        flipped = np.flip(image, tuple(axis + 1 for axis in axes)) if axes else image
        fused, probs, out.mode, out.device = infer(flipped, out.mode, out.device, report)
        if index == 0:
            out.fused = fused
        if probs is None:
            continue
        probs = flip(probs, axes)
        out.whole_tumour.append(labels_from_probabilities(probs, segmentation_output, channel_dim=0) > 0)
        out.probabilities = probs if out.probabilities is None else out.probabilities + probs
    if out.probabilities is not None and len(passes) > 1:
        out.probabilities = out.probabilities / len(passes)
    return out
