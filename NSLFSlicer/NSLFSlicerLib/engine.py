"""The one place NSLFSlicer calls the engine (:mod:`nslfcore`): model loading and inference.

Arrays are ``(z, y, x)``; the :class:`nslfcore.data.case.Case` geometry is LPS. Results:
``fused`` float32 (the normalised fused volume, values in [0, 1]) and ``labels`` uint8 in BraTS
2021 labels {0, 1, 2, 4}, both on the case grid.

Inference is :func:`nslfcore.inference.run`. Models come from ``nslfcore.model_store.load_model``
when the engine has a model store (issue 5), otherwise from a checkpoint path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.data.case import Case  # noqa: E402

#: ``progress(fraction in [0, 1], message)``; may raise to stop the computation (used for cancelling).
Progress = Callable[[float, str], None]


@dataclass
class EngineResult:
    """``fused`` float32 ``(z, y, x)`` or ``None``; ``labels`` uint8 ``(z, y, x)`` BraTS 2021 or ``None``."""

    fused: np.ndarray | None
    labels: np.ndarray | None


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; anything else unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(spec: Any, device: str) -> Any:
    """An NSLF model in eval mode on ``device`` from a model id, ``.pt`` path or URL (or an ``NSLF`` instance)."""
    import torch

    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval()
    store = _optional("nslfcore.model_store")
    if store is not None:
        loaded = store.load_model(spec, device)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        return model.to(device).eval()
    if spec is None:
        raise ValueError("No NSLF model was given and this engine has no model store; pass model='path/to/model.pt'.")
    from nslfcore.config import NSLFConfig
    from nslfcore.models import NSLF
    from nslfcore.training.checkpoint import load_checkpoint

    data = load_checkpoint(spec, map_location=device)
    model = NSLF(NSLFConfig.from_json(data["config"]))
    model.load_state_dict(data["model"])
    return model.to(device).eval()


def run(case: Case, model: Any, device: str, fuse: bool, segment: bool, progress: Progress) -> EngineResult:
    """Run NSLF on ``case`` with :func:`nslfcore.inference.run` (results on the case grid)."""
    from nslfcore.inference import run as run_inference

    result = run_inference(
        case, model, fuse=fuse, segment=segment, device=device, progress=progress, label_convention="brats2021"
    )
    return EngineResult(
        np.asarray(result.fused, dtype=np.float32) if fuse else None,
        np.asarray(result.labels, dtype=np.uint8) if segment else None,
    )
