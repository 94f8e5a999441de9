"""Whole-case NSLF inference on the original input grid.

The path reads left to right: input (a :class:`~nslfcore.data.case.Case`, four files, or a case
folder) -> :func:`~nslfcore.data.transforms.preprocess_case` (brain mask, crop to the brain's box,
normalisation) -> one network pass per volume or per window (fused volume AND class probabilities
from the same pass) -> paste back onto the original grid -> labels in BraTS 2021 ``{0, 1, 2, 4}``
or 2023 ``{0, 1, 2, 3}``.

Arrays are numpy ``(z, y, x)`` (SimpleITK order); the geometry is the input's (ITK ``(x, y, z)``
mm, LPS). Whole-volume inference is used when the estimated memory fits, otherwise MONAI's
sliding-window inference with Gaussian blending. On CUDA out-of-memory the ROI is halved, then the
CPU is used, each with a warning.
"""

from __future__ import annotations

import math
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
from nslfcore.data.labels import from_internal
from nslfcore.data.transforms import preprocess_case
from nslfcore.models import NSLF

#: ``progress(fraction in [0, 1], message)``.
Progress = Callable[[float, str], None]
Mode = Literal["auto", "whole", "sliding"]
LabelConvention = Literal["brats2021", "brats2023"]

#: The paper's inference window, (z, y, x) = 64 x 160 x 160 (its 160 x 160 x 64).
DEFAULT_ROI: tuple[int, int, int] = (64, 160, 160)
_MIN_ROI = 32


@dataclass
class InferenceResult:
    """Outputs on the input grid (arrays ``(z, y, x)``).

    Attributes:
        fused: float32 fused volume (normalised intensities in [0, 1], 0 outside the brain box), or ``None``.
        labels: uint8 label map in ``label_convention``, or ``None``.
        probabilities: float32 ``(4, z, y, x)`` class probabilities (background, NCR, ED, ET), or ``None``.
        geometry: the input's geometry (ITK ``(x, y, z)`` mm, LPS).
        timings: seconds per phase (``preprocess``, ``inference``, ``postprocess``, ``total``).
        mode: ``"whole"`` or ``"sliding"``; device: where the network ran.
    """

    fused: np.ndarray | None
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    geometry: Geometry
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = ""
    device: str = ""


def as_case(source: Case | Mapping[str, str | Path] | str | Path) -> Case:
    """A :class:`Case` from a Case, ``{modality: path}`` for the four modalities, or a case folder.

    Files are checked by :mod:`nslfcore.data.validation` (missing files, geometry mismatch, NaN/Inf,
    non-3-D images) and a problem raises :class:`~nslfcore.data.validation.DataValidationError`.
    """
    if isinstance(source, Case):
        return source
    if isinstance(source, Mapping):
        missing = [m for m in MODALITIES if m not in source]
        if missing:
            raise ValueError(f"Missing input modalities {missing}; give t1, t1ce, t2 and flair.")
        paths = {m: Path(source[m]) for m in MODALITIES}
        name = paths["t1"].name.split(".")[0]
        return load_case(CaseFiles(name=name, images=paths))
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a case folder; give a BraTS-layout case folder or four files.")
    cases = find_cases(folder) or find_cases(folder.parent)
    matches = [c for c in cases if c.name == folder.name] or cases
    if len(matches) != 1:
        raise ValueError(f"{folder} does not hold exactly one case (found {len(matches)}).")
    return load_case(matches[0])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; ``"cuda"`` -> ``cuda:0``."""
    if str(device) == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device} was asked for but CUDA is not available; use 'cpu' or 'auto'.")
        return torch.device("cuda", resolved.index or 0)
    return resolved


def estimate_memory_bytes(model: NSLF, spatial_shape: Sequence[int]) -> int:
    """Rough peak activation memory of one whole-volume pass (float32), in bytes.

    About six full-resolution tensors of ``4 modalities x w0`` channels are alive at the CU-Net's
    last level (skip, up-sampled, concatenation, two convolutions, the output), plus the FCD and FSD
    inputs; spatial sizes are padded to multiples of 16.
    """
    padded = [math.ceil(s / 16) * 16 for s in spatial_shape]
    voxels = int(np.prod(padded))
    w0 = model.config.local_width
    per_voxel = 4 * (6 * 4 * w0 + 4 * w0 + model.config.fsd_widths[0] + 16)
    return voxels * per_voxel


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 * 1024**3


def _count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    total = 1
    for size, r in zip(shape, roi):
        r = min(r, size)
        step = max(int(r * (1 - overlap)), 1)
        total *= math.ceil(max(size - r, 0) / step) + 1
    return total


class _Predictor:
    """One network pass: ``(B, 4, z, y, x)`` -> (fused ``(B, 1, ...)``, probabilities ``(B, 4, ...)``)."""

    def __init__(self, model: NSLF, progress: Progress | None, total: int, start: float, span: float) -> None:
        self.model, self.progress, self.total, self.start, self.span = model, progress, max(total, 1), start, span
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fusion, logits = self.model.fuse_and_segment(x.contiguous(memory_format=torch.channels_last_3d))
        self.calls += x.shape[0]
        if self.progress is not None:
            done = min(self.calls / self.total, 1.0)
            self.progress(self.start + self.span * done, f"inference {min(self.calls, self.total)}/{self.total}")
        return fusion.fused.float(), torch.softmax(logits.float(), dim=1)


def _infer(
    model: NSLF,
    image: np.ndarray,
    device: torch.device,
    mode: str,
    roi: tuple[int, int, int],
    overlap: float,
    progress: Progress | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    with torch.inference_mode(), autocast:
        if mode == "whole":
            predictor = _Predictor(model, progress, 1, 0.1, 0.8)
            fused, probs = predictor(x)
        else:
            roi = tuple(min(r, s) for r, s in zip(roi, x.shape[2:]))  # type: ignore[assignment]
            predictor = _Predictor(model, progress, _count_windows(x.shape[2:], roi, overlap), 0.1, 0.8)
            fused, probs = sliding_window_inference(
                x, roi, sw_batch_size=1, predictor=predictor, overlap=overlap, mode="gaussian"
            )
    return fused[0, 0].float().cpu(), probs[0].float().cpu()


def run(
    source: Case | Mapping[str, str | Path] | str | Path,
    model: NSLF,
    *,
    fuse: bool = True,
    segment: bool = True,
    device: str | torch.device = "auto",
    mode: Mode = "auto",
    roi: tuple[int, int, int] = DEFAULT_ROI,
    overlap: float = 0.5,
    label_convention: LabelConvention = "brats2021",
    probabilities: bool = False,
    progress: Progress | None = None,
) -> InferenceResult:
    """Fuse and/or segment one case; results on the input grid (see :class:`InferenceResult`).

    Args:
        source: a :class:`Case`, ``{modality: path}``, or a BraTS-layout case folder.
        model: an :class:`NSLF` (moved to ``device`` and put in eval mode here).
        fuse, segment: which outputs to return (the network pass is the same).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        mode: ``"whole"`` volume, ``"sliding"`` window, or ``"auto"`` (whole when it fits in memory).
        roi: sliding-window size ``(z, y, x)``; overlap: window overlap fraction.
        label_convention: ``"brats2021"`` (ET = 4) or ``"brats2023"`` (ET = 3).
        probabilities: also return the class probabilities ``(4, z, y, x)``.
        progress: ``progress(fraction, message)``.
    """
    if label_convention not in ("brats2021", "brats2023"):
        raise ValueError(f"label_convention must be 'brats2021' or 'brats2023', got {label_convention!r}.")
    if mode not in ("auto", "whole", "sliding"):
        raise ValueError(f"mode must be 'auto', 'whole' or 'sliding', got {mode!r}.")
    report = progress or (lambda fraction, message: None)
    clock = time.perf_counter()
    report(0.0, "reading and checking the inputs")
    case = as_case(source)
    prepared = preprocess_case(case)
    timings = {"preprocess": time.perf_counter() - clock}
    report(0.1, f"brain box {prepared.image.shape[1:]} voxels (z, y, x)")

    torch_device = resolve_device(device)
    model = model.eval()
    if mode == "auto":
        fits = estimate_memory_bytes(model, prepared.image.shape[1:]) < _available_bytes(torch_device)
        mode = "whole" if fits else "sliding"
    start = time.perf_counter()
    current_roi = tuple(roi)
    while True:
        try:
            model.to(torch_device, memory_format=torch.channels_last_3d)
            fused_t, probs_t = _infer(model, prepared.image, torch_device, mode, current_roi, overlap, progress)  # type: ignore[arg-type]
            break
        except torch.OutOfMemoryError:
            if torch_device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if mode == "whole":
                mode = "sliding"
                warnings.warn(f"Out of GPU memory for the whole volume; retrying with sliding windows {current_roi}.")
            elif min(current_roi) > _MIN_ROI:
                current_roi = tuple(max(_MIN_ROI, r // 2) for r in current_roi)
                warnings.warn(f"Out of GPU memory; retrying with smaller windows {current_roi}.")
            else:
                torch_device = torch.device("cpu")
                warnings.warn("Out of GPU memory even with small windows; running on the CPU instead.")
    timings["inference"] = time.perf_counter() - start

    report(0.9, "pasting the results back onto the input grid")
    start = time.perf_counter()
    record = prepared.record
    fused = record.uncrop(fused_t.numpy().astype(np.float32)) if fuse else None
    labels = probs = None
    if segment or probabilities:
        probs_box = probs_t.numpy().astype(np.float32)
        if segment:
            internal = record.uncrop(probs_box.argmax(axis=0).astype(np.uint8))
            labels = from_internal(internal, label_convention).astype(np.uint8)
        if probabilities:
            probs = record.uncrop(probs_box)
            outside = np.ones(case.geometry.shape, dtype=bool)
            outside[record.slices] = False
            probs[0][outside] = 1.0  # background outside the brain box
    timings["postprocess"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - clock
    report(1.0, "done")
    return InferenceResult(fused, labels, probs, case.geometry, timings, mode, str(torch_device))


def fuse(source: Case | Mapping[str, str | Path] | str | Path, model: NSLF, **options) -> InferenceResult:
    """The fused volume only (see :func:`run`)."""
    return run(source, model, fuse=True, segment=False, **options)


def segment(source: Case | Mapping[str, str | Path] | str | Path, model: NSLF, **options) -> InferenceResult:
    """The label map only (see :func:`run`)."""
    return run(source, model, fuse=False, segment=True, **options)
