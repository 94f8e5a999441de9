"""Trained NSLF models: the registry (``Resources/Models/models.json``), checksums, loading, downloads.

A model file is an NSLF weights checkpoint (:func:`nslfcore.training.checkpoint.new_checkpoint`
with ``config`` and ``model``), read with ``torch.load(weights_only=True)``. Registry entries carry
the file's SHA-256, checked before every load; a mismatch is refused. Nothing is downloaded unless
:func:`download_model` is called explicitly (by the user), and a download is checksum-verified.

The registry folder is ``$NSLF_MODELS_DIR`` or the checkout's ``Resources/Models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nslfcore.config import NSLFConfig
from nslfcore.models import NSLF
from nslfcore.training.checkpoint import load_checkpoint

#: ``progress(fraction in [0, 1], message)``.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry (see ``Resources/Models/models.json``); ``path`` is resolved against the registry folder."""

    id: str
    path: Path
    sha256: str
    title: str = ""
    description: str = ""
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def models_dir(folder: str | Path | None = None) -> Path:
    """The registry folder: ``folder``, ``$NSLF_MODELS_DIR``, or ``<checkout>/Resources/Models``."""
    if folder is not None:
        return Path(folder)
    if os.environ.get("NSLF_MODELS_DIR"):
        return Path(os.environ["NSLF_MODELS_DIR"])
    return Path(__file__).resolve().parents[2] / "Resources" / "Models"


def list_models(folder: str | Path | None = None) -> list[ModelInfo]:
    """The registry's models (empty when there is no ``models.json``)."""
    registry = models_dir(folder) / "models.json"
    if not registry.is_file():
        return []
    data = json.loads(registry.read_text())
    infos = []
    for entry in data.get("models", []):
        known = {"id", "file", "sha256", "title", "description", "url"}
        infos.append(
            ModelInfo(
                id=entry["id"], path=registry.parent / entry["file"], sha256=entry["sha256"], title=entry.get("title", ""),
                description=entry.get("description", ""), url=entry.get("url"),
                extra={k: v for k, v in entry.items() if k not in known},
            )
        )  # fmt: skip
    return infos


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise ``ValueError`` unless ``path``'s SHA-256 is ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ValueError(
            f"Model file {path} fails its checksum (SHA-256 {actual[:12]}..., expected {expected[:12]}...); "
            "it is damaged or was changed: download or copy it again."
        )


def resolve_model(spec: str | Path, folder: str | Path | None = None) -> tuple[Path, ModelInfo | None]:
    """A registry id (checksum verified) or a path to a model file; URLs must be downloaded first."""
    text = str(spec)
    if text.startswith(("http://", "https://", "file://")):
        raise ValueError(f"{text} is a URL; download it first with download_model(url, sha256) (an explicit action).")
    for info in list_models(folder):
        if info.id == text:
            if not info.path.is_file():
                raise FileNotFoundError(f"Model {info.id!r} is registered but its file {info.path} is missing.")
            verify(info.path, info.sha256)
            return info.path, info
    path = Path(text)
    if path.is_file():
        return path, None
    known = [i.id for i in list_models(folder)]
    raise FileNotFoundError(f"Model {text!r} is neither a registered model ({known or 'none registered'}) nor a file.")


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> NSLF:
    """An :class:`NSLF` in eval mode from a weights checkpoint file (``weights_only=True``)."""
    data = load_checkpoint(path)
    if "config" not in data or "model" not in data:
        raise ValueError(f"{path} has no network configuration or weights; is it an NSLF model file?")
    model = NSLF(NSLFConfig.from_json(data["config"]))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as error:
        raise ValueError(f"{path} does not match its own configuration ({str(error).splitlines()[0]}).") from error
    return model.to(device).eval()


def load_model(
    spec: str | Path, device: str | torch.device = "cpu", folder: str | Path | None = None
) -> tuple[NSLF, ModelInfo | None]:
    """Resolve ``spec`` (registry id or path), verify it, and load it (see :func:`load_weights`)."""
    path, info = resolve_model(spec, folder)
    return load_weights(path, device), info


def download_model(
    url: str, sha256: str, cache_dir: str | Path | None = None, progress: Progress | None = None
) -> Path:
    """Download ``url`` into the cache (``$NSLF_CACHE_DIR`` or ``~/.cache/nslf/models``), verified by ``sha256``.

    Called only on an explicit user action. The file is written under a temporary name and renamed
    once its checksum matches; on a mismatch nothing is left behind. ``file://`` URLs work too.
    """
    cache = Path(cache_dir or os.environ.get("NSLF_CACHE_DIR") or Path.home() / ".cache" / "nslf" / "models")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / (Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1])).name or "model.pt")
    if target.is_file() and sha256_file(target) == sha256.lower():
        return target
    bar = _tqdm_bar(target.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=cache)
    try:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url) as response, os.fdopen(fd, "wb") as handle:  # noqa: S310 - user-chosen URL
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                handle.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done / total if total else 0.0, f"downloaded {done / 1e6:.1f} MB")
                if bar is not None:
                    bar.total = total or None
                    bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        if digest.hexdigest() != sha256.lower():
            raise ValueError(f"The download from {url} fails its checksum; nothing was kept. Check the URL and try again.")
        os.replace(tmp, target)
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    if progress is not None:
        progress(1.0, f"saved {target}")
    return target


def _tqdm_bar(name: str) -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(desc=name, unit="B", unit_scale=True)
