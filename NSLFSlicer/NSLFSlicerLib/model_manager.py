"""The models the panel offers: shipped ones (the extension's ``models.json``) and the user's own.

User models live in a folder of the user's choosing (the widget keeps it in ``QSettings``) with
their own ``models.json`` in the registry format of :mod:`nslfcore.model_store`. Adding a file
validates it first: it must be an NSLF weights file with its configuration, load with
``torch.load(weights_only=True)`` into that configuration (strictly), and run a forward pass on a
tiny input giving finite outputs of the right shapes; only then is it copied in and registered
with its SHA-256 and size, so later loads verify it. Nothing is downloaded unless
:func:`download` is called (a button press).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import engine, ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.data.output import atomic_copy, atomic_write_text  # noqa: E402
from nslfcore.model_store import (  # noqa: E402
    REGISTRY_NAME,
    ModelError,
    ModelInfo,
    cached_path,
    list_models,
    load_model,
    resolve_model,
    sha256_file,
)

__all__ = ["ModelEntry", "ModelError", "add_model", "download", "installed_models", "panel_models", "remove_model",
           "validate_model_file"]  # fmt: skip


@dataclass(frozen=True)
class ModelEntry:
    """A model the panel lists: ``spec`` is what to pass as ``model=`` (registry id or file path)."""

    info: ModelInfo
    source: str  # "shipped" or "user"
    spec: str

    @property
    def available(self) -> bool:
        """The file is on this computer (a registry model with a URL may need an explicit download)."""
        return self.info.path is not None and self.info.path.is_file()

    def label(self) -> str:
        """The selector's text: title (or id), ``(yours)`` for user models, ``(download)`` when missing."""
        text = self.info.title or self.info.id
        if self.source == "user":
            text += " (yours)"
        return text if self.available else text + " (download)"

    def metrics(self) -> str:
        """One line of the registry's evaluation (mean Dice per region and fusion SSIM), or ``""``."""
        evaluation = self.info.evaluation or {}
        dice = evaluation.get("dice") or {}
        parts = [f"{region} Dice {dice[region]:.3f}" for region in ("ET", "TC", "WT") if region in dice]
        if "ssim" in evaluation:
            parts.append(f"SSIM {evaluation['ssim']:.3f}")
        where = evaluation.get("data")
        return ", ".join(parts) + (f" ({where})" if parts and where else "")


def _located(info: ModelInfo) -> ModelInfo:
    """``info`` pointing at the download cache when its file is not shipped but was downloaded before."""
    if (info.path is not None and info.path.is_file()) or not info.url or not info.sha256:
        return info
    cached = cached_path(info.url, info.sha256)
    return replace(info, path=cached) if cached.is_file() else info


def installed_models(user_dir: str | Path | None = None) -> list[ModelEntry]:
    """Shipped models first (registry order), then the user's; raises :class:`ModelError` naming a registry it cannot read."""
    entries = [ModelEntry(_located(info), "shipped", info.id) for info in list_models(engine.models_folder())]
    if user_dir is not None and (Path(user_dir) / REGISTRY_NAME).is_file():
        entries += [ModelEntry(info, "user", str(info.path)) for info in list_models(user_dir)]
    return entries


def panel_models(user_dir: str | Path | None) -> tuple[list[ModelEntry], str]:
    """What the panel lists: :func:`installed_models`, or only the shipped ones when the user's registry is broken.

    Returns ``(entries, problem)``: ``problem`` is ``""``, or the one sentence naming the user's
    ``models.json`` that could not be read and what to do (the panel shows it; it never stops the panel opening).
    """
    try:
        return installed_models(user_dir), ""
    except ModelError as error:
        return installed_models(), f"Your models are not listed: {error} Until then only the shipped models are offered."


def validate_model_file(path: str | Path) -> ModelInfo:
    """Load ``path`` safely and run it on a tiny input; returns its info or raises :class:`ModelError` (one sentence)."""
    import torch

    path = Path(path)
    model, info = load_model(path, device="cpu")
    if not (model.fuses and model.segments):
        raise ModelError(f"Model file {path} holds a network that does not fuse and segment (a baseline?); use an NSLF model.")
    x = torch.rand(1, 4, 16, 16, 16)
    with torch.inference_mode():
        fusion, logits = model.fuse_and_segment(x)
    if fusion.fused.shape != (1, 1, 16, 16, 16) or logits.shape != (1, model.config.output_channels, 16, 16, 16):
        raise ModelError(f"Model file {path} gives outputs of unexpected shapes; it is not a usable NSLF model.")
    if not (torch.isfinite(fusion.fused).all() and torch.isfinite(logits).all()):
        raise ModelError(f"Model file {path} gives NaN or infinite outputs; its weights are broken.")
    return info


def _read_user_registry(user_dir: Path) -> dict[str, Any]:
    path = user_dir / REGISTRY_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"models": []}


def _write_user_registry(user_dir: Path, registry: dict[str, Any]) -> None:
    user_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(user_dir / REGISTRY_NAME, json.dumps(registry, indent=2))


def add_model(path: str | Path, user_dir: str | Path, title: str | None = None, description: str = "") -> ModelEntry:
    """Validate ``path`` (:func:`validate_model_file`), copy it into ``user_dir`` and register it; returns its entry.

    The same file (same SHA-256) is not added twice. The id is the file name's stem, made unique.
    """
    path, user_dir = Path(path), Path(user_dir)
    info = validate_model_file(path)
    sha256 = sha256_file(path)
    registry = _read_user_registry(user_dir)
    for entry in registry["models"]:
        if entry.get("sha256") == sha256:
            raise ModelError(f"{path} is already installed as {entry['id']!r}.")
    taken = {e["id"] for e in registry["models"]} | {m.info.id for m in installed_models()}
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem) or "model"
    model_id, n = base, 1
    while model_id in taken:
        n += 1
        model_id = f"{base}-{n}"
    target = user_dir / f"{model_id}.pt"
    user_dir.mkdir(parents=True, exist_ok=True)
    atomic_copy(path, target)  # a full disk leaves no half-copied model behind
    registry["models"].append({
        "id": model_id, "title": title or model_id, "description": description or f"Added from {path}",
        "file": target.name, "sha256": sha256, "size_bytes": target.stat().st_size, "config": info.config,
        "training": {"stage": info.stage, "epoch": info.epoch},
    })  # fmt: skip
    _write_user_registry(user_dir, registry)
    return next(e for e in installed_models(user_dir) if e.info.id == model_id)


def remove_model(model_id: str, user_dir: str | Path) -> None:
    """Remove a user model (its file and entry); shipped models cannot be removed."""
    user_dir = Path(user_dir)
    registry = _read_user_registry(user_dir)
    entry = next((e for e in registry["models"] if e.get("id") == model_id), None)
    if entry is None:
        raise ModelError(f"{model_id!r} is not one of your models (shipped models cannot be removed).")
    registry["models"].remove(entry)
    _write_user_registry(user_dir, registry)
    (user_dir / entry["file"]).unlink(missing_ok=True)


def download(entry: ModelEntry, progress: Any = None) -> ModelEntry:
    """Download a shipped model's file now (the user asked), verified against its SHA-256; returns the updated entry."""
    info = resolve_model(entry.info.id, engine.models_folder(), download=True, progress=progress)
    return ModelEntry(info, entry.source, entry.spec)
