"""The one place NSLFSlicer calls the engine (:mod:`nslfcore`): model loading and inference.

Arrays are ``(z, y, x)``; the :class:`nslfcore.data.case.Case` geometry is LPS. Results:
``fused`` float32 (the normalised fused volume, values in [0, 1]) and ``labels`` uint8 in BraTS
2021 labels {0, 1, 2, 4}, both on the case grid.

Uses ``nslfcore.inference.run`` and ``nslfcore.model_store.load_model`` when the engine has them;
until then (older engine) a minimal path: checkpoint file -> :class:`NSLF`, brain crop +
normalisation (:func:`nslfcore.data.transforms.preprocess_case`), one forward pass, uncrop.
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
    """Run NSLF on ``case``; ``progress`` is called between steps with a fraction of the inference."""
    inference = _optional("nslfcore.inference")
    if inference is not None:
        result = inference.run(case, model, device=device, progress=progress, label_convention="brats2021")
        return EngineResult(
            np.asarray(result.fused, dtype=np.float32) if fuse else None,
            np.asarray(result.labels, dtype=np.uint8) if segment else None,
        )
    return _single_pass(case, model, device, fuse, segment, progress)


def _single_pass(case: Case, model: Any, device: str, fuse: bool, segment: bool, progress: Progress) -> EngineResult:
    import torch
    from nslfcore.data.labels import internal_to_brats2021
    from nslfcore.data.transforms import preprocess_case

    progress(0.0, "Preprocessing")
    pre = preprocess_case(case)
    x = torch.from_numpy(pre.image)[None].to(device)
    progress(0.2, "Running NSLF")
    with torch.inference_mode():
        fusion, logits = model.fuse_and_segment(x)
    progress(0.9, "Pasting results back")
    fused = pre.record.uncrop(fusion.fused[0, 0].float().cpu().numpy()) if fuse else None
    labels = None
    if segment:
        internal = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
        labels = internal_to_brats2021(pre.record.uncrop(internal))
    progress(1.0, "Done")
    return EngineResult(fused, labels)
