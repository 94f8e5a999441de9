"""The one place NSLFSlicer calls the engine (:mod:`nslfcore`): model loading and inference.

Arrays are ``(z, y, x)``; the :class:`nslfcore.data.case.Case` geometry is LPS. Results:
``fused`` float32 (the normalised fused volume, values in [0, 1]) and ``labels`` uint8 in BraTS
2021 labels {0, 1, 2, 4}, both on the case grid.

Inference is :func:`nslfcore.inference.run`; models come from :func:`nslfcore.model_store.load_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import MODULE_DIR, ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.data.case import Case  # noqa: E402

#: ``progress(fraction in [0, 1], message)``; may raise to stop the computation (used for cancelling).
Progress = Callable[[float, str], None]


@dataclass
class EngineResult:
    """``fused`` float32 ``(z, y, x)`` or ``None``; ``labels`` uint8 ``(z, y, x)`` BraTS 2021 or ``None``;
    ``missing``: the modality the case lacked (the results come from the other three), or ``None``."""

    fused: np.ndarray | None
    labels: np.ndarray | None
    missing: str | None = None
    confidence: Any = None  # nslfcore.inference.Confidence of the segmentation, or None
    preprocessed: Any = None  # with preprocess: the nslfcore.preprocess.pipeline.PreparedExam (registrations, brain mask)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda:0"`` when available, else ``"cpu"`` (see :func:`nslfcore.inference.resolve_device`)."""
    from nslfcore.inference import resolve_device as resolve

    return str(resolve(device))


#: The device selector's entries without torch (and until the device query of :func:`device_query_command` answers).
DEFAULT_DEVICES: tuple[tuple[str, str], ...] = (("Automatic (GPU if available)", "auto"), ("CPU", "cpu"))


def device_choices() -> list[tuple[str, str]]:
    """``(label, device spec)`` for the device selector: automatic, each CUDA GPU by name, the CPU.

    Imports torch: runs in the child process of :func:`device_query_command`, never in Slicer's
    (the panel shows :data:`DEFAULT_DEVICES` until that child answers). Without torch only
    automatic and CPU are offered.
    """
    try:
        import torch
    except ImportError:
        return list(DEFAULT_DEVICES)
    choices = [DEFAULT_DEVICES[0]]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        choices.append((f"GPU {index}: {props.name} ({props.total_memory / 1024**3:.0f} GiB)", f"cuda:{index}"))
    return choices + [DEFAULT_DEVICES[1]]


def device_query_command() -> list[str]:
    """The command whose child prints ``{"result": {"devices": [[label, spec], ...], "torch": version}}``
    (the protocol of :mod:`.process_runner`): torch and CUDA are loaded there, not in Slicer's process."""
    from .process_runner import python_executable

    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from NSLFSlicerLib.engine import device_choices; "
            "import torch; print(json.dumps({'result': {'devices': device_choices(), 'torch': torch.__version__}}))")  # fmt: skip
    return [python_executable(), "-c", code, str(MODULE_DIR)]


def models_folder() -> Path:
    """The shipped models' registry folder: ``<module dir>/Resources/Models`` in an installed
    extension (CMake puts it there), else the source checkout's top ``Resources/Models``."""
    installed = MODULE_DIR / "Resources" / "Models"
    return installed if (installed / "models.json").is_file() else MODULE_DIR.parent / "Resources" / "Models"


def load_model(spec: Any, device: str) -> Any:
    """An NSLF model in eval mode on ``device`` from a model id, ``.pt`` path or URL (or an ``NSLF`` instance).

    ``None`` is the registry's default model (:func:`models_folder`); nothing is downloaded here.
    """
    import torch
    from nslfcore.model_store import load_model as load

    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval()
    return load(spec, device, models_dir=models_folder())[0].eval()


def run(case: Case | dict[str, str], model: Any, device: str, fuse: bool, segment: bool, progress: Progress,
        mirror: str | None = None, preprocess: bool = False) -> EngineResult:  # fmt: skip
    """Run NSLF on ``case`` with :func:`nslfcore.inference.run` (results on the case grid).

    ``mirror``: test-time mirroring, ``"none"``, ``"lr"`` or ``"all"`` (``None``: the engine's default,
    :data:`nslfcore.inference.DEFAULT_MIRROR`). ``preprocess``: ``case`` is a raw exam, ``{modality: file}``
    each on its own grid, co-registered, skull-stripped and aligned to the atlas first
    (:func:`nslfcore.preprocess.pipeline.prepare_exam`); the results are then on the grid of the
    exam's reference (:func:`.checks.preprocess_reference`) and :attr:`EngineResult.preprocessed` holds the way there.
    """
    from nslfcore.inference import DEFAULT_MIRROR
    from nslfcore.inference import run as run_inference

    result = run_inference(
        case, model, fuse=fuse, segment=segment, device=device, progress=progress, label_convention="brats2021",
        mirror=mirror or DEFAULT_MIRROR, preprocess=preprocess,
    )  # fmt: skip
    return EngineResult(
        np.asarray(result.fused, dtype=np.float32) if fuse else None,
        np.asarray(result.labels, dtype=np.uint8) if segment else None,
        result.missing,
        result.confidence if segment else None,
        result.preprocessed,
    )


def model_id(spec: Any) -> str | None:
    """The id of the model ``spec`` names (registry id, file stem; ``None``: the default model's), or ``None`` if unknown."""
    from nslfcore.model_store import ModelError, resolve_model

    if spec is not None and not isinstance(spec, (str, Path)):
        return None  # a network object
    try:
        return resolve_model(spec, models_folder()).id
    except (ModelError, OSError, ValueError):
        return None


def missing_sentence(missing: str, model: Any, fuse: bool, segment: bool) -> str:
    """The engine's one sentence on a missing sequence and its cost (:func:`nslfcore.inference.missing.missing_sentence`)."""
    from nslfcore.inference.missing import missing_sentence as sentence

    return sentence(missing, model_id(model), fuse, segment)
