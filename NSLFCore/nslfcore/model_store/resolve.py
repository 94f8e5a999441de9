"""From what a user names (a registry id, a file, a URL, or nothing) to a local model file."""

from __future__ import annotations

import urllib.parse
from dataclasses import replace
from pathlib import Path

from nslfcore.model_store.download import Progress, _split_url, cached_path, download_model
from nslfcore.model_store.registry import REGISTRY_NAME, ModelError, ModelInfo, default_model, list_models, registry_folder

_URL_SCHEMES = ("http://", "https://", "file://")


def _no_default_message(folder: Path) -> str:
    return (
        f"No model was named and {folder / REGISTRY_NAME} names no default model (none is shipped yet); "
        "pass a model file (.pt), a model id or a URL."
    )


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
        models_dir: folder of ``models.json`` (see :func:`~nslfcore.model_store.registry_folder`).
        cache_dir: download cache (see :func:`~nslfcore.model_store.cache_folder`).
        download: fetch a registry model's or URL's file into the cache when it is not there.
        progress: ``progress(fraction, message)`` while downloading.

    Returns:
        a :class:`ModelInfo` whose ``path`` exists (not yet checksum-verified;
        :func:`~nslfcore.model_store.load_model` does that).
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
