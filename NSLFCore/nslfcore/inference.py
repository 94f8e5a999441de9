"""Whole-case NSLF inference on the original input grid.

The path reads left to right: input (a :class:`~nslfcore.data.case.Case`, four files, or a case
folder) -> :func:`~nslfcore.data.transforms.preprocess_case` (brain mask, crop to the brain's box,
normalisation) -> one network pass per volume or per window (fused volume AND class probabilities
from the same pass; the four modalities go through CU-Net in one batched call) -> paste back onto
the original grid, zero outside the brain -> labels in BraTS 2021 ``{0, 1, 2, 4}`` or 2023
``{0, 1, 2, 3}``.

Arrays are numpy ``(z, y, x)`` (SimpleITK order); the geometry is the input's (ITK ``(x, y, z)``
mm, LPS). Whole-volume inference is used when the estimated memory (:func:`estimate_memory_bytes`)
fits; if not, the whole volume one modality at a time through CU-Net and FCD (``"sequential"``:
the same result with about half the peak memory); otherwise MONAI's sliding-window inference with
Gaussian blending. When memory runs out anyway the next of these is tried, windows shrink, and on
CUDA the CPU is used last, each step with a warning.

Example:
    >>> from nslfcore.data.phantom import generate_tiny_case
    >>> from nslfcore.config import PRESETS
    >>> result = run(generate_tiny_case(), NSLF(PRESETS["compact"]), device="cpu")
    >>> result.fused.shape == result.labels.shape == result.geometry.shape
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from nslfcore import MODALITIES
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.case import Case, CaseFiles, Geometry
from nslfcore.data.io import missing_file_reason
from nslfcore.data.labels import from_internal
from nslfcore.data.transforms import brain_mask, preprocess_case
from nslfcore.data.validation import DataValidationError, available_ram_bytes, plausibility_problems
from nslfcore.models import NSLF

#: ``progress(fraction in [0, 1], message)``; an exception raised by it stops the inference.
Progress = Callable[[float, str], None]
Mode = Literal["auto", "whole", "sequential", "sliding"]
#: What each mode a result can come from is called in messages (one table, so no mode is missing).
MODE_DESCRIPTIONS: dict[str, str] = {
    "whole": "whole-volume inference",
    "sequential": "whole-volume inference, one modality at a time",
    "sliding": "sliding-window inference",
}
LabelConvention = Literal["brats2021", "brats2023"]
Source = Case | Mapping[str, str | Path] | str | Path

#: The paper's inference window, (z, y, x) = 64 x 160 x 160 (its 160 x 160 x 64).
DEFAULT_ROI: tuple[int, int, int] = (64, 160, 160)
#: Windows are never made smaller than this (voxels per axis) when memory runs out.
_MIN_ROI = 32


@dataclass
class InferenceResult:
    """Outputs on the input grid (arrays ``(z, y, x)``).

    Attributes:
        fused: float32 fused volume (normalised intensities in [0, 1], 0 outside the brain), or ``None``.
        labels: uint8 label map in ``label_convention`` (0 outside the brain), or ``None``.
        probabilities: float32 ``(4, z, y, x)`` class probabilities (background, NCR, ED, ET), summing
            to 1 per voxel (background 1 outside the brain), or ``None``.
        geometry: the input's geometry (ITK ``(x, y, z)`` mm, LPS).
        timings: seconds per phase (``preprocess``, ``inference``, ``postprocess``, ``total``).
        mode: ``"whole"``, ``"sequential"`` or ``"sliding"``; device: where the network ran (after any fallback).
    """

    fused: np.ndarray | None
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    geometry: Geometry
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = ""
    device: str = ""


# ---------------------------------------------------------------------------------------- inputs
def check_case(case: Case) -> None:
    """Raise :class:`DataValidationError` unless ``case`` has four finite volumes on its grid."""
    problems = []
    for modality in MODALITIES:
        if modality not in case.images:
            problems.append(f"{case.name}: no {modality} volume; give all four modalities ({', '.join(MODALITIES)}).")
            continue
        array = np.asarray(case.images[modality])
        if array.shape != case.geometry.shape:
            problems.append(
                f"{case.name}: the {modality} volume has shape {array.shape} but the case grid is "
                f"{case.geometry.shape} (z, y, x); resample it onto the case grid."
            )
        elif np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            problems.append(f"{case.name}: the {modality} volume has NaN or infinite voxels; clean or mask it first.")
    if not problems:
        problems = plausibility_problems(case.name, {m: np.asarray(case.images[m]) for m in MODALITIES})
    if problems:
        raise DataValidationError(problems)


def as_case(source: Source) -> Case:
    """A checked :class:`Case` from a Case, ``{modality: path}`` for the four modalities, or one case folder.

    Files are checked by :mod:`nslfcore.data.validation` (missing or unreadable files, geometry
    mismatch, NaN/Inf, 2-D/4-D images); any problem raises
    :class:`~nslfcore.data.validation.DataValidationError` with one line per problem. Labels are
    not read.
    """
    if isinstance(source, Case):
        check_case(source)
        return source
    if isinstance(source, Mapping):
        missing = [m for m in MODALITIES if m not in source]
        if missing:
            raise ValueError(f"Missing input modalities {missing}; give t1, t1ce, t2 and flair.")
        paths = {m: Path(source[m]) for m in MODALITIES}
        absent = [f"{missing_file_reason(paths[m])} (the {m} input)." for m in MODALITIES
                  if not (paths[m].is_file() and os.access(paths[m], os.R_OK))]  # fmt: skip
        if absent:
            raise DataValidationError(absent)
        return load_case(CaseFiles(name=paths["t1"].name.split(".")[0], images=paths))
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a case folder; give a BraTS-layout case folder or four files.")
    cases = find_cases(folder)
    if len(cases) != 1:
        raise ValueError(f"{folder} holds {len(cases)} cases; give the folder of one case (its t1, t1ce, t2 and flair files).")
    return load_case(dataclasses.replace(cases[0], label=None))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; ``"cuda"`` -> ``cuda:0``."""
    if str(device) == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device} was asked for but CUDA is not available; use 'cpu' or 'auto'.")
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"Device {device} does not exist ({torch.cuda.device_count()} CUDA devices); use 'cuda:0'.")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return resolved


# ---------------------------------------------------------------------------------------- memory
def estimate_memory_bytes(model: torch.nn.Module, spatial_shape: Sequence[int], sequential: bool = False) -> int:
    """Rough peak activation memory of one whole-volume pass (float32), in bytes.

    ``spatial_shape`` is ``(z, y, x)``; sizes are padded to multiples of 16 as the model does.
    Batched NSLF, per voxel: about six full-resolution tensors of ``4 modalities x w0`` channels
    are alive at the CU-Net's last decoder level (skip, up-sampled, concatenation, two
    convolutions, the output), plus the four local features the FCD and FSD read, the FSD's first
    width and ~16 channels of inputs and outputs: ``4 bytes x (28 w0 + fsd0 + 16)``, i.e. 1024
    B/voxel for ``compact`` and 3904 for ``paper`` (measured peak RSS on the CPU, torch 2.13: about
    900 and 2930). ``sequential`` (one modality at a time, :meth:`NSLF.fuse_and_segment_sequential`):
    the four stored local features, one modality's decoder and the FSD's two first-width tensors,
    ``4 bytes x (10 w0 + 2 fsd0 + 16)``: 512 B/voxel for ``compact``, 1856 for ``paper``. Under bf16
    autocast (CUDA) the real need is lower still. Other networks (the U-Net baseline) state their
    own ``inference_bytes_per_voxel``.
    """
    padded = [math.ceil(s / 16) * 16 for s in spatial_shape]
    voxels = int(np.prod(padded))
    if isinstance(model, NSLF):
        w0, fsd0 = model.config.local_width, model.config.fsd_widths[0]
        per_voxel = 4 * (10 * w0 + 2 * fsd0 + 16) if sequential else 4 * (6 * 4 * w0 + 4 * w0 + fsd0 + 16)
    else:
        per_voxel = int(getattr(model, "inference_bytes_per_voxel", 4096))
    return voxels * per_voxel


def available_bytes(device: torch.device) -> int:
    """Memory whole-volume inference may use: 70 % of free CUDA memory, or half the available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    return available_ram_bytes() // 2


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is PyTorch running out of GPU or CPU memory."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


# ------------------------------------------------------------------------------------- inference
def _count_windows(shape: Sequence[int], roi: Sequence[int], overlap: Sequence[float]) -> int:
    """Number of windows MONAI's sliding-window inference visits (its scan-interval rule, per axis)."""
    total = 1
    for size, r, o in zip(shape, roi, overlap):
        step = max(int(r * (1 - o)), 1) if r < size else r
        total *= math.ceil(max(size - r, 0) / step) + 1
    return total


class _Predictor:
    """One network pass: ``(B, 4, z, y, x)`` -> ``{"fused": (B, 1, ...), "probs": (B, 4, ...)}``.

    ``fused`` is there when the model fuses (NSLF), ``probs`` when segmentation is asked for. A
    network other than NSLF (the U-Net baseline) is a plain segmenter: logits out, no fusion.
    Counts the windows it has seen to report progress between ``start`` and ``start + span``.
    """

    def __init__(
        self, model: torch.nn.Module, segment: bool, progress: Progress | None, total: int, start: float, span: float,
        sequential: bool = False,
    ) -> None:  # fmt: skip
        self.model, self.segment, self.progress = model, segment, progress
        self.total, self.start, self.span = max(total, 1), start, span
        self.calls = 0
        self.unets = model.cunet.split_modalities() if sequential and isinstance(model, NSLF) else None

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        out: dict[str, torch.Tensor] = {}
        if not isinstance(self.model, NSLF):
            out["probs"] = torch.softmax(self.model(x).float(), dim=1)
        elif self.unets is not None:
            fusion, logits = self.model.fuse_and_segment_sequential(x, self.segment, self.unets)
            out["fused"] = fusion.fused.float()
            if logits is not None:
                out["probs"] = torch.softmax(logits.float(), dim=1)
        elif self.segment:
            fusion, logits = self.model.fuse_and_segment(x)
            out = {"fused": fusion.fused.float(), "probs": torch.softmax(logits.float(), dim=1)}
        else:
            out["fused"] = self.model.fuse(x).fused.float()
        self.calls += x.shape[0]
        if self.progress is not None:
            done = min(self.calls, self.total)
            self.progress(self.start + self.span * done / self.total, f"inference: window {done}/{self.total}")
        return out


def _infer(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    mode: str,
    roi: tuple[int, int, int],
    overlap: tuple[float, float, float],
    segment: bool,
    progress: Progress | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fused ``(z, y, x)`` and probabilities ``(4, z, y, x)`` (each or ``None``) of a ``(4, z, y, x)`` box, on the CPU."""
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        if mode in ("whole", "sequential"):
            out = _Predictor(model, segment, progress, 1, 0.1, 0.8, sequential=mode == "sequential")(x)
        else:
            window = tuple(min(r, s) for r, s in zip(roi, x.shape[2:]))
            predictor = _Predictor(model, segment, progress, _count_windows(x.shape[2:], window, overlap), 0.1, 0.8)
            out = sliding_window_inference(x, window, 1, predictor, overlap=overlap, mode="gaussian")
    fused, probs = out.get("fused"), out.get("probs")
    return (None if fused is None else fused[0, 0].float().cpu()), (None if probs is None else probs[0].float().cpu())


def _smaller(roi: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Half the window (multiples of 16, at least :data:`_MIN_ROI`), or ``None`` when it cannot shrink."""
    smaller = tuple(min(r, max(_MIN_ROI, r // 32 * 16)) for r in roi)
    return None if smaller == tuple(roi) else smaller  # type: ignore[return-value]


def _infer_with_fallback(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    mode: str,
    roi: Sequence[int],
    overlap: tuple[float, float, float],
    segment: bool,
    progress: Progress,
) -> tuple[torch.Tensor | None, torch.Tensor | None, str, torch.device]:
    """:func:`_infer`, retried when memory runs out: whole volume -> windows -> smaller windows -> (CUDA) the CPU.

    Returns the outputs and the mode and device that produced them. Each retry is announced with a
    ``RuntimeWarning`` and a progress message; when nothing is left to try, ``MemoryError`` says so.
    """
    mode = _choose_mode(mode, model, image.shape[1:], device)
    window = tuple(int(r) for r in roi)
    while True:
        try:
            model.to(device, memory_format=torch.channels_last_3d)
            fused, probs = _infer(model, image, device, mode, window, overlap, segment, progress)  # type: ignore[arg-type]
            return fused, probs, mode, device
        except Exception as error:  # noqa: BLE001 - only running out of memory is retried
            if not _out_of_memory(error):
                raise
        where = "GPU" if device.type == "cuda" else "CPU"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = _smaller(window)  # type: ignore[arg-type]
        if mode == "whole" and isinstance(model, NSLF):
            mode, message = "sequential", f"Out of {where} memory for the whole volume; retrying one modality at a time."
        elif mode in ("whole", "sequential"):
            mode, message = "sliding", f"Out of {where} memory for the whole volume; retrying with windows {window} (z, y, x)."
        elif smaller is not None:
            window, message = smaller, f"Out of {where} memory; retrying with smaller windows {smaller} (z, y, x)."
        elif device.type == "cuda":
            device, window = torch.device("cpu"), tuple(int(r) for r in roi)
            mode = _choose_mode("auto", model, image.shape[1:], device)
            message = "Out of GPU memory even with the smallest windows; running on the CPU instead (slower)."
        else:
            raise MemoryError(
                f"Not enough memory to run NSLF on a {image.shape[1:]} (z, y, x) brain box, even with {window} windows "
                "on the CPU; close other programs or use a machine with more memory."
            )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        progress(0.1, message)


def _choose_mode(mode: str, model: torch.nn.Module, box: Sequence[int], device: torch.device) -> str:
    if mode != "auto":
        return mode
    budget = available_bytes(device)
    if estimate_memory_bytes(model, box) < budget:
        return "whole"
    if isinstance(model, NSLF) and estimate_memory_bytes(model, box, sequential=True) < budget:
        return "sequential"
    return "sliding"


def run(
    source: Source,
    model: torch.nn.Module | str | Path | None,
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
) -> InferenceResult:
    """Fuse and/or segment one case; results on the input grid (see :class:`InferenceResult`).

    Args:
        source: a :class:`Case`, ``{modality: path}``, or a BraTS-layout case folder.
        model: an :class:`NSLF` (moved to ``device`` and put in eval mode here), or a model id, file
            or downloaded URL for :func:`nslfcore.model_store.load_model` (``None``: the default model),
            or a segmentation-only network such as :class:`nslfcore.baseline.BaselineUNet` (``fuse=False``).
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
    """
    if label_convention not in ("brats2021", "brats2023"):
        raise ValueError(f"label_convention must be 'brats2021' or 'brats2023', got {label_convention!r}.")
    if mode not in ("auto", "whole", "sequential", "sliding"):
        raise ValueError(f"mode must be 'auto', 'whole', 'sequential' or 'sliding', got {mode!r}.")
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi must be three positive sizes (z, y, x), got {tuple(roi)}.")
    overlaps = (float(overlap),) * 3 if isinstance(overlap, (int, float)) else tuple(float(o) for o in overlap)
    if len(overlaps) != 3 or not all(0 <= o < 1 for o in overlaps):
        raise ValueError(f"overlap must be one fraction in [0, 1) or three (z, y, x), got {overlap}.")
    report = progress or (lambda fraction, message: None)
    clock = time.perf_counter()
    torch_device = resolve_device(device)
    report(0.0, "reading and checking the inputs")
    case = as_case(source)
    if not isinstance(model, torch.nn.Module):
        from nslfcore.model_store import load_model

        model, _ = load_model(model, device="cpu")
    if fuse and not isinstance(model, NSLF):
        raise ValueError(f"{type(model).__name__} is a segmentation-only network; it cannot fuse (use fuse=False).")
    prepared = preprocess_case(case)
    record = prepared.record
    brain = brain_mask(np.stack([record.crop(np.asarray(case.images[m])) for m in MODALITIES]))
    timings = {"preprocess": time.perf_counter() - clock}
    report(0.1, f"brain box {prepared.image.shape[1:]} voxels (z, y, x)")

    start = time.perf_counter()
    fused_t, probs_t, mode, torch_device = _infer_with_fallback(
        model.eval(), prepared.image, torch_device, mode, roi, overlaps, segment or probabilities, report
    )
    timings["inference"] = time.perf_counter() - start

    report(0.9, "pasting the results back onto the input grid")
    start = time.perf_counter()
    fused = labels = probs = None
    if fuse and fused_t is not None:
        fused = record.uncrop(np.where(brain, fused_t.numpy(), 0).astype(np.float32))
    if probs_t is not None:
        probs_box = probs_t.numpy()
        probs_box[:, ~brain] = 0.0
        probs_box[0][~brain] = 1.0  # background outside the brain
        if segment:
            internal = record.uncrop(probs_box.argmax(axis=0).astype(np.uint8))
            labels = from_internal(internal, label_convention)
        if probabilities:  # background 1 outside the box too
            probs = np.concatenate([record.uncrop(probs_box[:1], fill=1.0), record.uncrop(probs_box[1:])])
    timings["postprocess"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - clock
    report(1.0, "done")
    return InferenceResult(fused, labels, probs, case.geometry, timings, mode, str(torch_device))


def fuse(source: Source, model: torch.nn.Module | str | Path | None, **options) -> InferenceResult:
    """The fused volume only (the FSD is skipped); see :func:`run` for the arguments."""
    return run(source, model, fuse=True, segment=False, **options)


def segment(source: Source, model: torch.nn.Module | str | Path | None, **options) -> InferenceResult:
    """The label map only (and probabilities on request); see :func:`run` for the arguments."""
    return run(source, model, fuse=False, segment=True, **options)
