"""Explicit, verified downloads of model files into a cache folder.

Nothing is ever downloaded unless asked for (:func:`download_model`, or ``download=True`` in
:func:`nslfcore.model_store.resolve_model`). Downloads go to ``NSLF_CACHE_DIR`` (default
``~/.cache/nslf/models``), are checked against their SHA-256 and written atomically. A URL that is
not in the registry names its checksum in a fragment: ``https://host/model.pt#sha256=<64 hex digits>``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nslfcore.model_store.checksums import CHUNK_BYTES, verify
from nslfcore.model_store.registry import ModelError

#: Environment variable naming the download cache folder (default ``~/.cache/nslf/models``).
CACHE_DIR_ENV = "NSLF_CACHE_DIR"

#: ``progress(fraction in [0, 1], message)``.
Progress = Callable[[float, str], None]


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """The download cache: ``cache_dir``, else ``$NSLF_CACHE_DIR``, else ``~/.cache/nslf/models``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    return Path.home() / ".cache" / "nslf" / "models"


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
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
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
