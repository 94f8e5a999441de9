"""Trained NSLF models for inference: the registry, checksums, downloads and loading.

A *model file* is an NSLF weights checkpoint (:mod:`nslfcore.training.checkpoint`; ``nslf train``
writes ``stageN_best.pt``): a plain dictionary with ``format`` ``"nslf-checkpoint"``, ``config``
(the :class:`~nslfcore.config.NSLFConfig` as JSON), ``stage``, ``epoch`` and ``model`` (the state
dict). It is read with ``torch.load(weights_only=True)`` only, so a file that would need full
pickle (custom classes, code) is refused, as are truncated or damaged files.

The *registry* ``models.json`` lists the shipped models. It lives in ``Resources/Models`` of the
repository (``Path(nslfcore.__file__).parents[2] / "Resources" / "Models"``), or in the folder named
by the environment variable ``NSLF_MODELS_DIR``, or in a folder passed as ``models_dir``::

    {
      "default": "nslf-compact",                      # optional: the model used when none is named
      "models": [
        {
          "id": "nslf-compact",
          "title": "NSLF compact (BraTS 2021)",
          "description": "...",
          "file": "nslf-compact.pt",                  # relative to the registry's folder
          "sha256": "<64 hex digits>",
          "size_bytes": 13712345,
          "config": {...},                            # NSLFConfig.to_dict() of the file
          "inputs": {"t1": ["*_t1.nii.gz", "*-t1n.nii.gz"], ...},
          "labels": {"0": "background", "1": "NCR", "2": "ED", "4": "ET"},
          "license": "Apache-2.0",
          "training": {"data": "...", "command": "nslf train ..."},
          "evaluation": {...},
          "url": "https://..."                        # optional: where to download the file
        }
      ]
    }

Registry entries are verified against ``size_bytes`` and ``sha256`` before loading. Nothing is
ever downloaded unless asked for (:func:`download_model`, or ``download=True``); downloads go to
a cache folder (``NSLF_CACHE_DIR``, default ``~/.cache/nslf/models``), are checked against their
SHA-256 and written atomically. A URL that is not in the registry names its checksum in a
fragment: ``https://host/model.pt#sha256=<64 hex digits>``.

Example:
    >>> model, info = load_model("path/to/stage3_best.pt", device="cpu")  # doctest: +SKIP
    >>> info.stage, model.config.name  # doctest: +SKIP
    (3, 'compact')
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import nslfcore
from nslfcore.config import NSLFConfig

if TYPE_CHECKING:  # the registry, checksums and downloads work without torch; loading imports it
    import torch

    from nslfcore.models import NSLF

#: Environment variable naming the folder of ``models.json`` (overrides the repository's ``Resources/Models``).
MODELS_DIR_ENV = "NSLF_MODELS_DIR"
#: Environment variable naming the download cache folder (default ``~/.cache/nslf/models``).
CACHE_DIR_ENV = "NSLF_CACHE_DIR"
REGISTRY_NAME = "models.json"
_URL_SCHEMES = ("http://", "https://", "file://")
_CHUNK = 1 << 20

#: ``progress(fraction in [0, 1], message)``.
Progress = Callable[[float, str], None]


class ModelError(ValueError):
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
            fields (see the module docstring); empty for a plain file.
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


# ------------------------------------------------------------------------------------ registry
def registry_folder(models_dir: str | Path | None = None) -> Path:
    """The folder of ``models.json``: ``models_dir``, else ``$NSLF_MODELS_DIR``, else the repository's ``Resources/Models``."""
    if models_dir is not None:
        return Path(models_dir)
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV])
    return Path(nslfcore.__file__).resolve().parents[2] / "Resources" / "Models"


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``$NSLF_CACHE_DIR``, else ``~/.cache/nslf/models``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    return Path.home() / ".cache" / "nslf" / "models"


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


def _no_default_message(folder: Path) -> str:
    return (
        f"No model was named and {folder / REGISTRY_NAME} names no default model (none is shipped yet); "
        "pass a model file (.pt), a model id or a URL."
    )


# ----------------------------------------------------------------------------------- checksums
def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | Path, sha256: str, size_bytes: int | None = None) -> None:
    """Raise :class:`ModelError` unless ``path`` has ``size_bytes`` (if given) and SHA-256 ``sha256``."""
    path = Path(path)
    if size_bytes is not None and path.stat().st_size != int(size_bytes):
        raise ModelError(
            f"Model file {path} has {path.stat().st_size} bytes, not the expected {size_bytes}: it is incomplete "
            "or was replaced; reinstall or download it again."
        )
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ModelError(
            f"Model file {path} does not match its SHA-256 checksum (expected {sha256}, found {actual}): "
            "it is damaged or was replaced; reinstall or download it again."
        )


# ------------------------------------------------------------------------------------ download
def _split_url(url: str) -> tuple[str, str | None]:
    """``(url without fragment, sha256 from a #sha256=... fragment or None)``."""
    base, _, fragment = url.partition("#")
    sha = fragment[len("sha256=") :].lower() if fragment.startswith("sha256=") else None
    return base, sha


def cached_path(url: str, sha256: str, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`download_model` keeps ``url``: ``<cache>/<sha256[:16]>-<file name>``."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(_split_url(url)[0]).path)).name or "model.pt"
    return cache_folder(cache_dir) / f"{sha256.lower()[:16]}-{name}"


def _progress_bar(total: int | None, name: str) -> Any:
    """A tqdm bar on an interactive terminal, else ``None`` (tqdm is optional)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr)


def download_model(
    url: str,
    sha256: str,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` (``http(s)://`` or ``file://``) into the cache, check its SHA-256, return the file.

    A file already in the cache with the right checksum is not downloaded again. The download goes
    to a temporary file in the cache folder, renamed into place only when its checksum matches;
    on a mismatch or any error nothing is left behind and :class:`ModelError` is raised.

    Args:
        url: the address; a ``#sha256=...`` fragment is ignored here.
        sha256: the expected checksum (64 hex digits).
        cache_dir: the cache folder (default: see :func:`cache_folder`).
        progress: ``progress(fraction, message)`` while downloading (fraction 0 when the size is unknown).
        timeout: seconds to wait for the server.
    """
    base, _ = _split_url(url)
    target = cached_path(base, sha256, cache_dir)
    report = progress or (lambda fraction, message: None)
    if target.is_file():
        try:
            verify(target, sha256)
            report(1.0, f"{target.name} is already downloaded")
            return target
        except ModelError:
            target.unlink()  # a damaged cached copy: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    bar = None
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(base, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress_bar(total, target.name)
            done = 0
            report(0.0, f"downloading {base}")
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                handle.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                fraction = min(done / total, 1.0) if total else 0.0
                report(fraction, f"downloaded {done / 1e6:.1f}" + (f" of {total / 1e6:.1f} MB" if total else " MB"))
            handle.flush()
            os.fsync(handle.fileno())
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise ModelError(
                f"The file downloaded from {base} does not match its SHA-256 checksum (expected {sha256}, "
                f"found {actual}) and was deleted; check the address and the checksum."
            )
        os.replace(temp, target)
    except BaseException as error:
        if os.path.exists(temp):
            os.unlink(temp)
        if isinstance(error, ModelError) or not isinstance(error, (OSError, ValueError, http.client.HTTPException)):
            raise
        reason = getattr(error, "reason", None) or error
        raise ModelError(f"Cannot download {base} ({reason}); check the address and the connection.") from None
    finally:
        if bar is not None:
            bar.close()
    report(1.0, f"downloaded {target}")
    return target


# ----------------------------------------------------------------------------------- resolving
def resolve_model(
    spec: str | Path | None,
    models_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> ModelInfo:
    """Find the file of a model; nothing is downloaded unless ``download`` is true.

    Args:
        spec: a registry id, a path to a model file (``.pt``), a URL (``http(s)://``, ``file://``;
            not in the registry: with a ``#sha256=`` fragment), or ``None`` for the registry's
            default model.
        models_dir: folder of ``models.json`` (see :func:`registry_folder`).
        cache_dir: download cache (see :func:`cache_folder`).
        download: fetch a registry model's or URL's file into the cache when it is not there.
        progress: ``progress(fraction, message)`` while downloading.

    Returns:
        a :class:`ModelInfo` whose ``path`` exists (not yet checksum-verified; :func:`load_model` does that).
    """
    folder = registry_folder(models_dir)
    if spec is None:
        info = default_model(folder)
        if info is None:
            raise ModelError(_no_default_message(folder))
    elif str(spec).startswith(_URL_SCHEMES):
        info = _url_info(str(spec), folder)
    else:
        info = _local_info(spec, folder)
    if info.path is not None and info.path.is_file():
        return info
    if info.url is None:
        raise ModelError(
            f"Model {info.id!r} is listed in {folder / REGISTRY_NAME} but its file {info.path} is missing; "
            "reinstall the extension or pass a model file."
        )
    assert info.sha256 is not None
    cached = cached_path(info.url, info.sha256, cache_dir)
    if cached.is_file():
        return replace(info, path=cached)
    if not download:
        raise ModelError(
            f"Model {info.id!r} is not downloaded yet; download it explicitly (nslf ... --download, or "
            f"nslfcore.model_store.download_model) from {info.url} into {cached.parent}."
        )
    return replace(info, path=download_model(info.url, info.sha256, cache_dir, progress))


def _url_info(url: str, folder: Path) -> ModelInfo:
    base, sha = _split_url(url)
    for info in list_models(folder):
        if info.url and _split_url(info.url)[0] == base:
            return info
    if sha is None or len(sha) != 64:
        raise ModelError(f"{base} is not in the model registry; add its checksum as {base}#sha256=<64 hex digits>.")
    name = Path(urllib.parse.urlparse(base).path).stem or "model"
    return ModelInfo(id=name, path=None, sha256=sha, url=base, source="url")


def _local_info(spec: str | Path, folder: Path) -> ModelInfo:
    path = Path(spec).expanduser()
    if path.is_file():
        return ModelInfo(id=path.stem, path=path, source="file")
    models = list_models(folder)
    for info in models:
        if info.id == str(spec):
            return info
    if path.suffix in (".pt", ".pth") or len(path.parts) > 1:
        raise ModelError(f"Model file {path} does not exist; check the path.")
    known = ", ".join(repr(m.id) for m in models)
    registry = folder / REGISTRY_NAME
    where = f"{registry} lists {known}" if known else f"no models are installed ({registry} lists none)"
    raise ModelError(f"Unknown model {str(spec)!r}: it is not a file and {where}; pass a model file (.pt), a model id or a URL.")


# ------------------------------------------------------------------------------------- loading
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
    if not isinstance(data.get("config"), str) or not isinstance(data.get("model"), dict):
        raise ModelError(f"Model file {path} has no network configuration or weights; use a file written by nslf train.")
    return data


def load_model(
    spec: str | Path | None = None,
    device: str | torch.device = "cpu",
    models_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: Progress | None = None,
) -> tuple[NSLF, ModelInfo]:
    """An :class:`NSLF` in eval mode on ``device`` and its :class:`ModelInfo`.

    ``spec`` as for :func:`resolve_model`. A registry or URL model is checked against its size and
    SHA-256 first; the file is read with ``weights_only=True``; the weights must match the file's
    configuration exactly (``strict=True``). Every refusal is a :class:`ModelError` with one sentence.
    A model trained only up to stage 1 or 2 loads with a warning (its segmentation head is untrained).
    """
    from nslfcore.models import NSLF

    info = resolve_model(spec, models_dir, cache_dir, download, progress)
    assert info.path is not None
    if info.sha256 is not None:
        verify(info.path, info.sha256, info.size_bytes if info.source == "registry" else None)
    data = _read_weights(info.path)
    try:
        config = NSLFConfig.from_json(data["config"])
    except (ValueError, TypeError) as error:
        raise ModelError(f"Model file {info.path} has an invalid network configuration ({error}).") from None
    if info.config and NSLFConfig.from_dict(info.config) != config:
        raise ModelError(f"Model file {info.path} does not have the configuration its registry entry states; fix the registry.")
    model = NSLF(config)
    try:
        model.load_state_dict(data["model"], strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0].rstrip(":. ")
        raise ModelError(f"Model file {info.path} does not match its own configuration ({first}).") from None
    stage = data.get("stage")
    if isinstance(stage, int) and stage < 3:
        warnings.warn(
            f"Model {info.id!r} was trained up to stage {stage} only; its fusion is usable but its segmentation is untrained.",
            stacklevel=2,
        )
    info = replace(info, config=config.to_dict(), stage=stage, epoch=data.get("epoch"))
    return model.to(device).eval(), info
