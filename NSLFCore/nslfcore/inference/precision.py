"""The number format of the network pass: float32, or bfloat16 where the hardware runs it natively.

``"auto"`` picks bfloat16 autocast on CUDA and on CPUs with native bfloat16 arithmetic (Intel AMX
``amx_bf16`` or AVX-512 ``avx512_bf16``, as reported by ``/proc/cpuinfo``), where oneDNN's bf16
3-D convolutions run about 2-3x faster than float32; everywhere else float32 (bf16 emulated in
software would be slower). Inputs, outputs, softmax and pasting back stay float32; only the
network's layers run in bf16 under ``torch.autocast``. The labels agree with float32 ones to a
Dice of 0.99 or better per region (measured in ``benchmarks/RESULTS.md``; pinned by a test on the
demo case).

A float64 network (``model.double()``: exactness checks) runs in float64 whatever the precision:
its inputs are cast to float64 and autocast, which leaves float64 tensors alone, is not entered
(:func:`network_dtype`).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

#: The ``/proc/cpuinfo`` flags of native bfloat16 arithmetic.
_NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16); ``False`` where unknown."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of the network pass on ``device``: ``torch.bfloat16`` or ``torch.float32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}.")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16" or device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def network_dtype(model: Any) -> torch.dtype:
    """The dtype of ``model``'s (a ``torch.nn.Module``) first floating-point parameter; ``torch.float32`` when it has none."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def compute_dtype(precision: str, device: torch.device, model: Any) -> torch.dtype:
    """The number format of ``model``'s pass: :func:`resolve_precision`'s, or float64 for a float64 network."""
    resolved = resolve_precision(precision, device)
    return torch.float64 if network_dtype(model) == torch.float64 else resolved


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or nothing for float32 and float64."""
    if dtype in (torch.float32, torch.float64):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
