"""Model files: writing a network (:func:`save_model`) and reading one back safely (:func:`load_model`).

A model file is an NSLF checkpoint (:mod:`nslfcore.training.checkpoint`; see
:mod:`nslfcore.model_store`): ``new_checkpoint(**network.checkpoint_fields(), model=state_dict,
**metadata)``, written atomically and read with ``torch.load(weights_only=True)`` only. Its
``kind`` says which :class:`~nslfcore.models.interface.Network` to build: ``"weights"`` (what
``nslf train`` writes as ``stageN_best.pt``) an :class:`~nslfcore.models.NSLF` from ``config``,
``"baseline"`` a segmentation baseline (:mod:`nslfcore.segmentation_baselines`) from ``arch``
(a U-Net when absent), ``architecture`` and ``features``.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nslfcore.config import NSLFConfig
from nslfcore.model_store.checksums import verify
from nslfcore.model_store.download import Progress
from nslfcore.model_store.registry import ModelError, ModelInfo
from nslfcore.model_store.resolve import resolve_model

if TYPE_CHECKING:  # the registry, checksums and downloads work without torch; loading imports it
    import torch

    from nslfcore.models import Network

#: The ``kind`` of a baseline file (:data:`nslfcore.segmentation_baselines.KIND`; not imported: NSLF needs no MONAI nets).
_BASELINE_KIND = "baseline"


def _read_weights(path: Path) -> dict[str, Any]:
    """The checkpoint dictionary of a model file, with one-sentence errors for every way it can be wrong."""
    from nslfcore.training.checkpoint import load_checkpoint

    try:
        data = load_checkpoint(path)
    except FileNotFoundError:
        raise ModelError(f"Model file {path} does not exist; check the path.") from None
    except ValueError as error:
        cause = error.__cause__
        if cause is None:  # readable, but no NSLF checkpoint or one from a newer nslfcore
            why = str(error).replace(str(path), "it").rstrip(".")
            raise ModelError(f"Model file {path} cannot be used: {why}; use a file written by nslf train.") from None
        if "unsupported global" in str(cause).lower():
            why = "it holds Python objects that only full (unsafe) unpickling could load; use a file written by nslf train"
        else:
            why = "it is truncated or damaged; copy or download it again"
        raise ModelError(f"Model file {path} cannot be read safely: {why}.") from None
    description, kind = ("features", list) if data.get("kind") == _BASELINE_KIND else ("config", str)
    if not isinstance(data.get(description), kind) or not isinstance(data.get("model"), dict):
        raise ModelError(f"Model file {path} has no network configuration or weights; use a file written by nslf train.")
    return data


def save_model(model: Network, path: str | Path, **metadata: Any) -> Path:
    """Write ``model`` as a model file that :func:`load_model` reads back; returns ``path``.

    The file is ``new_checkpoint(**model.checkpoint_fields(), model=model.state_dict(), **metadata)``
    written atomically (temporary file, fsync, rename): for an NSLF ``kind="weights"`` and
    ``config`` (the :class:`~nslfcore.config.NSLFConfig` as JSON), as ``nslf train`` writes
    ``stageN_best.pt``.

    Args:
        model: a :class:`~nslfcore.models.interface.Network` (:class:`~nslfcore.models.NSLF`, a segmentation baseline).
        path: the file to write (its folder is created).
        metadata: more fields, e.g. ``stage`` (1-3; below 3 :func:`load_model` warns that the
            segmentation is untrained), ``epoch``, ``best_metric``, ``trained_stages`` (see
            :func:`trained_stages`; a stage-2 file fine-tuned from a stage-3 one lacks 3).

    Example:
        >>> path = save_model(NSLF(PRESETS["compact"]), "random.pt", stage=3, epoch=1)  # doctest: +SKIP
        >>> load_model(path)[1].stage  # doctest: +SKIP
        3
    """
    from nslfcore.training.checkpoint import atomic_torch_save, new_checkpoint

    return atomic_torch_save(new_checkpoint(**model.checkpoint_fields(), model=model.state_dict(), **metadata), path)


def trained_stages(data: dict[str, Any]) -> tuple[int, ...]:
    """The stages whose training holds for a checkpoint's weights: its ``trained_stages`` (what ``nslf
    train`` writes: the ``--init`` file's stages below the run's first, and the run's own), else 1 to
    its ``stage``, else ``()``. Stage 3 missing means the segmenter is untrained or was trained on
    features an earlier stage has changed since."""
    recorded = data.get("trained_stages")
    if isinstance(recorded, (list, tuple)):
        return tuple(sorted({int(s) for s in recorded}))
    stage = data.get("stage")
    return tuple(range(1, stage + 1)) if isinstance(stage, int) else ()


def _network(data: dict[str, Any], info: ModelInfo) -> tuple[Network, dict[str, Any]]:
    """The untrained network a checkpoint describes, and its configuration for :attr:`ModelInfo.config`."""
    if data.get("kind") == _BASELINE_KIND:
        from nslfcore.segmentation_baselines import baseline_from_fields

        try:
            return baseline_from_fields(data), info.config
        except (ValueError, TypeError) as error:
            raise ModelError(f"Model file {info.path} cannot be used: {error}; train one with nslf baseline.") from None
    from nslfcore.models import NSLF

    try:
        config = NSLFConfig.from_json(data["config"])
    except (ValueError, TypeError) as error:
        raise ModelError(f"Model file {info.path} has an invalid network configuration ({error}).") from None
    if info.config and NSLFConfig.from_dict(info.config) != config:
        raise ModelError(f"Model file {info.path} does not have the configuration its registry entry states; fix the registry.")
    return NSLF(config), config.to_dict()


def load_model(
    spec: str | Path | None = None,
    device: str | torch.device = "cpu",
    models_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> tuple[Network, ModelInfo]:
    """The network of a model file in eval mode on ``device`` and its :class:`ModelInfo`; inverse of :func:`save_model`.

    ``spec`` as for :func:`~nslfcore.model_store.resolve_model`. A registry or URL model is checked
    against its size and SHA-256 first; the file is read with ``weights_only=True``; the weights
    must match the file's configuration exactly (``strict=True``). Every refusal is a
    :class:`ModelError` with one sentence. A model trained only up to stage 1 or 2 loads with a
    warning (its segmentation head is untrained). The network is an :class:`~nslfcore.models.NSLF`
    (or, for a baseline file, a :class:`~nslfcore.segmentation_baselines.SegmentationBaseline`).
    """
    info = resolve_model(spec, models_dir, cache_dir, download, progress)
    assert info.path is not None
    if info.sha256 is not None:
        verify(info.path, info.sha256, info.size_bytes if info.source == "registry" else None)
    data = _read_weights(info.path)
    model, config = _network(data, info)
    try:
        model.load_state_dict(data["model"], strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0].rstrip(":. ")
        raise ModelError(f"Model file {info.path} does not match its own configuration ({first}).") from None
    stage = data.get("stage")
    if isinstance(stage, int) and 3 not in trained_stages(data):
        warnings.warn(
            f"Model {info.id!r} was trained up to stage {stage} only; its fusion is usable but its segmentation is untrained "
            f"for it: train stage 3 (nslf train --stage 3 --init {info.path}) before segmenting.",
            stacklevel=2,
        )
    info = replace(info, config=config, stage=stage, epoch=data.get("epoch"))
    return model.to(device).eval(), info
