"""How the network sees the brain box: the whole volume, one modality at a time, or sliding windows.

``"whole"``: one pass over the ``(4, z, y, x)`` box. ``"sequential"``: the same, but one modality
at a time through CU-Net and FCD (:meth:`NSLF.fuse_and_segment_sequential`: the same result with
about half the peak memory). ``"sliding"``: MONAI's sliding-window inference with Gaussian
blending. ``"auto"`` picks the first that fits the estimated memory
(:func:`~nslfcore.inference.memory.estimate_memory_bytes`); when memory runs out anyway the next is
tried, windows shrink, and on CUDA the CPU is used last, each step with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal, cast

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from nslfcore.inference.memory import available_bytes, estimate_memory_bytes, out_of_memory
from nslfcore.inference.precision import autocast, compute_dtype, network_dtype
from nslfcore.models import Network
from nslfcore.models.outputs import class_probabilities

#: ``progress(fraction in [0, 1], message)``; an exception raised by it stops the inference.
Progress = Callable[[float, str], None]
Mode = Literal["auto", "whole", "sequential", "sliding"]
#: What each mode a result can come from is called in messages (one table, so no mode is missing).
MODE_DESCRIPTIONS: dict[str, str] = {
    "whole": "whole-volume inference",
    "sequential": "whole-volume inference, one modality at a time",
    "sliding": "sliding-window inference",
}

#: The paper's inference window, (z, y, x) = 64 x 160 x 160 (its 160 x 160 x 64).
DEFAULT_ROI: tuple[int, int, int] = (64, 160, 160)
#: Windows are never made smaller than this (voxels per axis) when memory runs out.
_MIN_ROI = 32


def _count_windows(shape: Sequence[int], roi: Sequence[int], overlap: Sequence[float]) -> int:
    """Number of windows MONAI's sliding-window inference visits (its scan-interval rule, per axis)."""
    total = 1
    for size, r, o in zip(shape, roi, overlap):
        step = max(int(r * (1 - o)), 1) if r < size else r
        total *= math.ceil(max(size - r, 0) / step) + 1
    return total


class _Predictor:
    """One network pass: ``(B, 4, z, y, x)`` -> ``{"fused": (B, 1, ...), "probs": (B, 4, ...)}``.

    ``fused`` is there when the network fuses, ``probs`` (the four class probabilities of
    :func:`~nslfcore.models.outputs.class_probabilities`, either output mode) when it returns logits
    (NSLF: when segmentation is asked for; the U-Net baseline: always). Counts the windows it has seen to
    report progress between ``start`` and ``start + span``.
    """

    def __init__(
        self, model: Network, segment: bool, progress: Progress | None, total: int, start: float, span: float,
        sequential: bool = False, present: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        self.model, self.segment, self.progress, self.sequential = model, segment, progress, sequential
        self.present = present  # (1, 4) bool, the case's modalities (None: all four), for every window
        self.total, self.start, self.span = max(total, 1), start, span
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.present is None:  # a network written before missing sequences needs no present argument
            fused, logits = self.model.predict(x, self.segment, self.sequential)
        else:
            present = self.present.to(x.device).expand(x.shape[0], -1)
            fused, logits = self.model.predict(x, self.segment, self.sequential, present=present)
        out: dict[str, torch.Tensor] = {}
        if fused is not None:
            out["fused"] = fused.float()
        if logits is not None:
            out["probs"] = class_probabilities(logits.float(), self.model.segmentation_output)
        self.calls += x.shape[0]
        if self.progress is not None:
            done = min(self.calls, self.total)
            self.progress(self.start + self.span * done / self.total, f"inference: window {done}/{self.total}")
        return out


def _infer(
    model: Network,
    image: np.ndarray,
    device: torch.device,
    mode: str,
    roi: tuple[int, int, int],
    overlap: tuple[float, float, float],
    segment: bool,
    progress: Progress | None,
    precision: str = "auto",
    present: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fused ``(z, y, x)`` and probabilities ``(4, z, y, x)`` (each or ``None``) of a ``(4, z, y, x)`` box, on the CPU.

    The network runs in :func:`~nslfcore.inference.precision.compute_dtype`'s number format; the
    input has the network's dtype (float64 for a float64 network). ``present``: the case's ``(1, 4)``
    mask of modalities (``None``: all four), given to every window: a window outside the brain is
    all-zero in every channel, but no sequence is missing there.
    """
    with warnings.catch_warnings():  # a read-only input (a memory-mapped cached case) is only read, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device, network_dtype(model))
    with torch.inference_mode(), autocast(device, compute_dtype(precision, device, model)):
        if mode in ("whole", "sequential"):
            out = _Predictor(model, segment, progress, 1, 0.1, 0.8, sequential=mode == "sequential", present=present)(x)
        else:
            window = tuple(min(r, s) for r, s in zip(roi, x.shape[2:]))
            predictor = _Predictor(model, segment, progress, _count_windows(x.shape[2:], window, overlap), 0.1, 0.8,
                                   present=present)  # fmt: skip
            windows = sliding_window_inference(x, window, 1, predictor, overlap=overlap, mode="gaussian")
            out = cast(dict[str, torch.Tensor], windows)  # the predictor's dict, stitched
    fused, probs = out.get("fused"), out.get("probs")
    return (None if fused is None else fused[0, 0].float().cpu()), (None if probs is None else probs[0].float().cpu())


def _smaller(roi: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Half the window (multiples of 16, at least :data:`_MIN_ROI`), or ``None`` when it cannot shrink."""
    smaller = tuple(min(r, max(_MIN_ROI, r // 32 * 16)) for r in roi)
    return None if smaller == tuple(roi) else smaller  # type: ignore[return-value]


def infer_with_fallback(
    model: Network,
    image: np.ndarray,
    device: torch.device,
    mode: str,
    roi: Sequence[int],
    overlap: tuple[float, float, float],
    segment: bool,
    progress: Progress,
    precision: str = "auto",
    *,
    present: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, str, torch.device]:
    """:func:`_infer`, retried when memory runs out: whole volume -> windows -> smaller windows -> (CUDA) the CPU.

    ``present``: ``(1, 4)`` bool, the modalities the case has (``None``: all four; see :func:`_infer`).

    Returns the outputs and the mode and device that produced them. Each retry is announced with a
    ``RuntimeWarning`` and a progress message; when nothing is left to try, ``MemoryError`` says so.
    """
    mode = _choose_mode(mode, model, image.shape[1:], device)
    window = tuple(int(r) for r in roi)
    while True:
        try:
            model.to(device, memory_format=torch.channels_last_3d)
            fused, probs = _infer(model, image, device, mode, window, overlap, segment, progress, precision, present)  # type: ignore[arg-type]
            return fused, probs, mode, device
        except Exception as error:  # noqa: BLE001 - only running out of memory is retried
            if not out_of_memory(error):
                raise
        where = "GPU" if device.type == "cuda" else "CPU"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = _smaller(window)  # type: ignore[arg-type]
        if mode == "whole" and model.sequential:
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


def _choose_mode(mode: str, model: Network, box: Sequence[int], device: torch.device) -> str:
    if mode != "auto":
        return mode
    budget = available_bytes(device)
    if estimate_memory_bytes(model, box) < budget:
        return "whole"
    if model.sequential and estimate_memory_bytes(model, box, sequential=True) < budget:
        return "sequential"
    return "sliding"
