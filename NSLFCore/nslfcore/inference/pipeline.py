"""The inference pipeline: inputs -> preprocess -> network -> back onto the input grid -> labels.

:func:`run` reads left to right: input (a :class:`~nslfcore.data.case.Case`, four files, or a
case folder; :func:`~nslfcore.inference.inputs.as_case`) ->
:func:`~nslfcore.data.transforms.preprocess_case` (brain mask, crop to the brain's box,
normalisation) -> one network pass per volume or per window
(:mod:`~nslfcore.inference.strategies`), on flipped copies too with test-time mirroring
(:mod:`~nslfcore.inference.mirroring`) -> confidence (:mod:`~nslfcore.inference.confidence`) ->
paste back onto the original grid, zero outside the brain -> labels in BraTS 2021 ``{0, 1, 2, 4}`` or 2023 ``{0, 1, 2, 3}``.

Arrays are numpy ``(z, y, x)`` (SimpleITK order); the geometry is the input's (ITK ``(x, y, z)``
mm, LPS).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nslfcore import MODALITIES
from nslfcore.data.case import Geometry
from nslfcore.data.labels import from_internal
from nslfcore.data.transforms import brain_mask, preprocess_case
from nslfcore.inference.confidence import Confidence, measure_confidence
from nslfcore.inference.devices import resolve_device
from nslfcore.inference.inputs import Source, as_case, check_case, raw_exam_advice
from nslfcore.inference.mirroring import DEFAULT_MIRROR, Mirror, PassOutput, check_mirror, mirrored_inference
from nslfcore.inference.precision import PRECISIONS, Precision, compute_dtype
from nslfcore.inference.strategies import DEFAULT_ROI, Mode, Progress, infer_with_fallback
from nslfcore.models import Network
from nslfcore.models.outputs import labels_from_probabilities
from nslfcore.preprocess.pipeline import PreparedExam, PreprocessOptions, prepare_exam, read_exam

PREPROCESS_SHARE = 0.5
"""The share of ``progress`` that raw-exam preprocessing takes (the network and the way back the rest)."""

LabelConvention = Literal["brats2021", "brats2023"]


@dataclass
class InferenceResult:
    """Outputs on the input grid (arrays ``(z, y, x)``).

    Attributes:
        fused: float32 fused volume (normalised intensities in [0, 1], 0 outside the brain), or ``None``.
        labels: uint8 label map in ``label_convention`` (0 outside the brain), or ``None``.
        probabilities: float32 ``(4, z, y, x)`` class probabilities (background, NCR, ED, ET), summing
            to 1 per voxel (background 1 outside the brain), or ``None``. A region-output network's
            nested WT, TC, ET probabilities are given as these classes (:mod:`nslfcore.models.outputs`).
        geometry: the input's geometry (ITK ``(x, y, z)`` mm, LPS).
        timings: seconds per phase (``preprocess``, ``inference``, ``postprocess``, ``total``).
        mode: ``"whole"``, ``"sequential"`` or ``"sliding"``; device: where the network ran (after any fallback).
        precision: the network's number format there, ``"fp32"``, ``"bf16"`` or ``"fp64"`` (a float64 network).
        confidence: agreement of the mirrored passes and entropy in the predicted tumour
            (:mod:`nslfcore.inference.confidence`), or ``None`` without segmentation.
        missing: the modality the case lacked (``"t1"``, ``"t1ce"``, ``"t2"`` or ``"flair"``; the
            results come from the other three, :mod:`nslfcore.inference.missing`), or ``None``.
        preprocessed: with ``preprocess``, the raw exam's way to the atlas grid and back
            (:class:`~nslfcore.preprocess.pipeline.PreparedExam`: registrations, brain mask, atlas-space
            inputs; :meth:`~nslfcore.preprocess.pipeline.PreparedExam.write` keeps them), else ``None``.
        advice: without ``preprocess``, one sentence when the inputs still look raw (thick or oblique
            voxels, a head with its skull) and ``preprocess`` would help
            (:func:`~nslfcore.inference.inputs.raw_exam_advice`), else ``None``.
    """

    fused: np.ndarray | None
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    geometry: Geometry
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = ""
    device: str = ""
    precision: str = ""
    confidence: Confidence | None = None
    missing: str | None = None
    preprocessed: PreparedExam | None = None
    advice: str | None = None


def run(
    source: Source,
    model: Network | str | Path | None,
    *,
    fuse: bool = True,
    segment: bool = True,
    device: str | torch.device = "auto",
    mode: Mode = "auto",
    roi: tuple[int, int, int] = DEFAULT_ROI,
    overlap: float | Sequence[float] = 0.5,
    label_convention: LabelConvention = "brats2021",
    probabilities: bool = False,
    progress: Progress | None = None,
    precision: Precision = "auto",
    mirror: Mirror = DEFAULT_MIRROR,
    preprocess: bool | PreprocessOptions = False,
) -> InferenceResult:
    """Fuse and/or segment one case; results on the input grid (see :class:`InferenceResult`).

    Args:
        source: a :class:`Case`, ``{modality: path}``, or a BraTS-layout case folder; one of the
            four modalities may be missing (:attr:`InferenceResult.missing`: it gets no fusion weight).
        model: a :class:`~nslfcore.models.interface.Network` (moved to ``device`` and put in eval mode
            here): an :class:`~nslfcore.models.NSLF`, or a segmentation-only network such as
            :class:`nslfcore.baseline.BaselineUNet` (``fuse=False``); or a model id, file or downloaded
            URL for :func:`nslfcore.model_store.load_model` (``None``: the default model).
        fuse, segment: which outputs to return; fusion alone skips the FSD, segmentation needs the
            fused volume anyway, and both come from the same network pass.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``.
        mode: ``"whole"`` volume, ``"sequential"`` (whole volume, one modality at a time through CU-Net
            and FCD: same result, about half the memory), ``"sliding"`` window, or ``"auto"`` (the
            first of these that fits in memory).
        roi: sliding-window size ``(z, y, x)``; overlap: window overlap fraction (one, or per axis).
        label_convention: ``"brats2021"`` (ET = 4) or ``"brats2023"`` (ET = 3).
        probabilities: also return the class probabilities ``(4, z, y, x)``.
        progress: ``progress(fraction, message)``: at the input check, per window, before pasting
            back, and at 1.0 when done.
        precision: the network's number format: ``"fp32"``, ``"bf16"`` (autocast), or ``"auto"``
            (bf16 on CUDA and on CPUs with native bf16, else fp32; see :mod:`nslfcore.inference.precision`).
        mirror: test-time mirroring (:mod:`nslfcore.inference.mirroring`): ``"none"`` (one pass), ``"lr"``
            (also flipped along x, two passes) or ``"all"`` (every flip of z, y, x, eight passes); the class
            probabilities are averaged, the fused volume is the unflipped pass's.
        preprocess: a raw exam (sequences on different grids, skull on, any orientation and spacing):
            ``True`` or :class:`~nslfcore.preprocess.pipeline.PreprocessOptions` co-registers, skull-strips
            and aligns it to the atlas first (:func:`~nslfcore.preprocess.pipeline.prepare_exam`, the first
            half of ``progress``); the results come back on the reference's (T1ce's) native grid and
            :attr:`InferenceResult.preprocessed` holds the intermediate results. ``source`` is then a
            ``{modality: path}`` mapping, a case folder or a :class:`Case` whose images share its grid.
    """
    if label_convention not in ("brats2021", "brats2023"):
        raise ValueError(f"label_convention must be 'brats2021' or 'brats2023', got {label_convention!r}.")
    if mode not in ("auto", "whole", "sequential", "sliding"):
        raise ValueError(f"mode must be 'auto', 'whole', 'sequential' or 'sliding', got {mode!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}.")
    check_mirror(mirror)
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi must be three positive sizes (z, y, x), got {tuple(roi)}.")
    overlaps = (float(overlap),) * 3 if isinstance(overlap, (int, float)) else tuple(float(o) for o in overlap)
    if len(overlaps) != 3 or not all(0 <= o < 1 for o in overlaps):
        raise ValueError(f"overlap must be one fraction in [0, 1) or three (z, y, x), got {overlap}.")
    report = progress or (lambda fraction, message: None)
    clock = time.perf_counter()
    torch_device = resolve_device(device)
    report(0.0, "reading and checking the inputs")
    exam: PreparedExam | None = None
    if preprocess:
        options = preprocess if isinstance(preprocess, PreprocessOptions) else PreprocessOptions(
            device="cuda" if torch_device.type == "cuda" else "cpu")  # fmt: skip
        name, images = read_exam(source)
        exam = prepare_exam(images, name, options,
                            progress=lambda fraction, message: report(PREPROCESS_SHARE * fraction, message))  # fmt: skip
        case = exam.case()
        check_case(case)
        outer = report
        report = lambda fraction, message: outer(PREPROCESS_SHARE + (1.0 - PREPROCESS_SHARE) * fraction, message)  # noqa: E731
    else:
        case = as_case(source)
    advice = raw_exam_advice(case) if exam is None else None
    if model is None or isinstance(model, (str, Path)):
        from nslfcore.model_store import load_model

        model, _ = load_model(model, device="cpu")
    if not isinstance(model, Network):
        raise TypeError(f"{type(model).__name__} is not an nslfcore.models.Network; pass an NSLF or a model file.")
    if fuse and not model.fuses:
        raise ValueError(f"{type(model).__name__} is a segmentation-only network; it cannot fuse (use fuse=False).")
    if (segment or probabilities) and not model.segments:
        raise ValueError(f"{type(model).__name__} is a fusion-only network; it cannot segment (use segment=False).")
    prepared = preprocess_case(case)
    record = prepared.record
    brain = brain_mask(np.stack([record.crop(np.asarray(case.images[m])) for m in MODALITIES if m in case.images]))
    missing = case.missing[0] if case.missing else None  # as_case allows one; its channel is zero after normalisation
    present = None if missing is None else torch.tensor([[m in case.images for m in MODALITIES]])
    if missing is not None:
        report(0.1, f"{missing} is missing: using the other three sequences")
    timings = {"preprocess": time.perf_counter() - clock}
    report(0.1, f"brain box {prepared.image.shape[1:]} voxels (z, y, x)")

    start = time.perf_counter()
    network, wanted = model.eval(), segment or probabilities

    def one_pass(image: np.ndarray, mode: str, device: torch.device, progress: Progress) -> PassOutput:
        return infer_with_fallback(network, image, device, mode, roi, overlaps, wanted, progress, precision, present=present)

    mirrored = mirrored_inference(one_pass, prepared.image, mode, torch_device, model.segmentation_output, report, mirror)
    fused_t, probs_t, used_mode, torch_device = mirrored.fused, mirrored.probabilities, mirrored.mode, mirrored.device
    timings["inference"] = time.perf_counter() - start

    report(0.9, "pasting the results back onto the input grid")
    start = time.perf_counter()
    fused = labels = probs = confidence = None
    if fuse and fused_t is not None:
        fused = record.uncrop(np.where(brain, fused_t.numpy(), 0).astype(np.float32))
    if probs_t is not None:
        probs_box = probs_t.numpy()
        probs_box[:, ~brain] = 0.0
        probs_box[0][~brain] = 1.0  # background outside the brain
        internal = labels_from_probabilities(torch.from_numpy(probs_box), model.segmentation_output, channel_dim=0)
        confidence = measure_confidence(torch.from_numpy(probs_box), mirrored.whole_tumour, torch.from_numpy(brain), internal > 0)
        if segment:
            labels = from_internal(record.uncrop(internal.numpy().astype(np.uint8)), label_convention)
        if probabilities:  # background 1 outside the box too
            probs = np.concatenate([record.uncrop(probs_box[:1], fill=1.0), record.uncrop(probs_box[1:])])
    geometry = case.geometry
    if exam is not None:
        report(0.95, f"bringing the results back onto the {exam.reference} grid")
        labels, fused, probs, geometry = exam.restore(labels, fused, probs)
        timings.update({f"preprocess_{step}": seconds for step, seconds in exam.timings.items()})
    timings["postprocess"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - clock
    report(1.0, "done")
    used_precision = {torch.bfloat16: "bf16", torch.float64: "fp64"}.get(compute_dtype(precision, torch_device, model), "fp32")
    return InferenceResult(fused, labels, probs, geometry, timings, used_mode, str(torch_device), used_precision,
                           confidence, missing, exam, advice)  # fmt: skip


def fuse(source: Source, model: Network | str | Path | None, **options) -> InferenceResult:
    """The fused volume only (the FSD is skipped); see :func:`run` for the arguments."""
    return run(source, model, fuse=True, segment=False, **options)


def segment(source: Source, model: Network | str | Path | None, **options) -> InferenceResult:
    """The label map only (and probabilities on request); see :func:`run` for the arguments."""
    return run(source, model, fuse=False, segment=True, **options)
