"""The registry ``models.json``: where it lives, what an entry says (:class:`ModelInfo`), listing it.

Nothing here reads a model file or needs torch. The registry's format is described in
:mod:`nslfcore.model_store`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nslfcore
from nslfcore.errors import NSLFError

#: Environment variable naming the folder of ``models.json`` (overrides the repository's ``Resources/Models``).
MODELS_DIR_ENV = "NSLF_MODELS_DIR"
REGISTRY_NAME = "models.json"


class ModelError(NSLFError, ValueError):
    """A model cannot be found, verified, downloaded or loaded; the message is one sentence saying what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a model: its registry entry (if any), its file, and what the file says.

    Attributes:
        id: registry id, or the file name without suffix for a file or URL.
        path: the local model file (``None`` for a URL not downloaded yet).
        sha256, size_bytes: expected checksum and size (``None`` when unknown: a plain file).
        url: where the file can be downloaded from, or ``None``.
        source: ``"registry"``, ``"file"`` or ``"url"``.
        config: the network configuration (``NSLFConfig.to_dict()``); from the file once loaded.
        stage, epoch: the training stage and epoch of the file (known once loaded).
        title, description, inputs, labels, license, training, evaluation: the registry entry's
            fields (see :mod:`nslfcore.model_store`); empty for a plain file.
    """

    id: str
    path: Path | None
    sha256: str | None = None
    size_bytes: int | None = None
    url: str | None = None
    source: str = "file"
    config: dict[str, Any] = field(default_factory=dict)
    stage: int | None = None
    epoch: int | None = None
    title: str = ""
    description: str = ""
    inputs: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    license: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)


def registry_folder(models_dir: str | Path | None = None) -> Path:
    """The folder of ``models.json``: ``models_dir``, else ``$NSLF_MODELS_DIR``, else the repository's ``Resources/Models``."""
    if models_dir is not None:
        return Path(models_dir)
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV])
    return Path(nslfcore.__file__).resolve().parents[2] / "Resources" / "Models"


def _read_registry(folder: Path) -> dict[str, Any]:
    path = folder / REGISTRY_NAME
    if not path.is_file():
        return {"models": []}
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path} cannot be read ({error}); fix or reinstall the model registry.") from None
    if not isinstance(registry, dict) or not isinstance(registry.get("models"), list):
        raise ModelError(f"{path} has no \"models\" list; fix or reinstall the model registry.")
    return registry


def _entry_info(entry: Any, index: int, folder: Path) -> ModelInfo:
    registry = folder / REGISTRY_NAME
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not isinstance(entry.get("file"), str):
        raise ModelError(f"{registry}: model entry {index + 1} needs an \"id\" and a \"file\"; fix the registry.")
    sha256 = entry.get("sha256")
    if not (isinstance(sha256, str) and len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256.lower())):
        raise ModelError(f"{registry}: model {entry['id']!r} needs a \"sha256\" of 64 hex digits; fix the registry.")
    return ModelInfo(
        id=entry["id"],
        path=folder / entry["file"],
        sha256=sha256.lower(),
        size_bytes=entry.get("size_bytes"),
        url=entry.get("url"),
        source="registry",
        config=dict(entry.get("config") or {}),
        title=entry.get("title", ""),
        description=entry.get("description", ""),
        inputs=dict(entry.get("inputs") or {}),
        labels=dict(entry.get("labels") or {}),
        license=entry.get("license", ""),
        training=dict(entry.get("training") or {}),
        evaluation=dict(entry.get("evaluation") or {}),
    )


def list_models(models_dir: str | Path | None = None) -> list[ModelInfo]:
    """The models of ``models.json`` (see :func:`registry_folder`), in file order; ``[]`` when there is no registry."""
    folder = registry_folder(models_dir)
    infos = [_entry_info(e, i, folder) for i, e in enumerate(_read_registry(folder)["models"])]
    seen: set[str] = set()
    for info in infos:
        if info.id in seen:
            raise ModelError(f"{folder / REGISTRY_NAME} lists model {info.id!r} twice; keep one entry.")
        seen.add(info.id)
    return infos


def default_model(models_dir: str | Path | None = None) -> ModelInfo | None:
    """The registry's ``"default"`` model, or ``None`` when the registry names none."""
    folder = registry_folder(models_dir)
    name = _read_registry(folder).get("default")
    if not name:
        return None
    for info in list_models(folder):
        if info.id == name:
            return info
    raise ModelError(f"{folder / REGISTRY_NAME} names default model {name!r} but lists no such model; fix the registry.")
