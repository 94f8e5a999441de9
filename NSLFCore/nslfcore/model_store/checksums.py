"""SHA-256 checksums of model files, and the check of a file against its registry entry."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nslfcore.model_store.registry import ModelError

#: Bytes read at a time while hashing or downloading.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
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
