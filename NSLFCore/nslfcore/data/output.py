"""Writing results so that they are never silently wrong or lost: verified files and locked output folders.

* :func:`verify_written` re-reads what was just written: a ``.gz`` file must decompress to its end
  (SimpleITK reports no error when a ``.nii.gz`` write runs out of disk, and leaves a truncated
  file), an image must have a readable header. A bad file raises ``OSError`` naming the likely
  cause (a full disk).
* :func:`install` moves verified temporary files onto their final names (``fsync`` first, then an
  atomic ``os.replace``), so a previous result is replaced only by a complete new one.
* :class:`OutputLock` holds ``<folder>/.nslf-lock`` (created exclusively, holding the process id)
  for as long as a run writes into the folder: a second run into the same folder is refused with
  a message naming the first; a lock left by a process that no longer exists (killed) is taken
  over, and the temporary files that process left (``.partial-<pid>-*``, ``.tmp-<pid>-*``,
  ``.staging-<pid>``) are removed.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from nslfcore.errors import NSLFError

#: The lock file's name inside an output folder.
LOCK_NAME = ".nslf-lock"
_CHUNK = 1 << 20


class OutputBusyError(NSLFError, OSError):
    """Another run is writing into the output folder."""


def _incomplete(path: Path, why: str) -> OSError:
    return OSError(f"{path} was not written completely ({why}; the disk may be full); no earlier result was replaced.")


def verify_written(path: str | Path) -> None:
    """Raise ``OSError`` unless ``path`` is a complete file: non-empty, a whole gzip stream for ``.gz``,
    a readable image header."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _incomplete(path, f"it cannot be read back: {error.strerror}") from None
    if size == 0:
        raise _incomplete(path, "it is empty")
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                while stream.read(_CHUNK):
                    pass
        except (OSError, EOFError, zlib.error) as error:
            raise _incomplete(path, f"its compressed data ends early: {error}") from None
    if path.name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise _incomplete(path, "its image header cannot be read back") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(pairs: Iterable[tuple[Path, Path]], verify: bool = True) -> None:
    """Verify and ``fsync`` every temporary file, then rename each onto its final name (all checked before any rename)."""
    pairs = [(Path(temp), Path(final)) for temp, final in pairs]
    for temp, _ in pairs:
        if verify:
            verify_written(temp)
        _fsync(temp)
    for temp, final in pairs:
        os.replace(temp, final)
    for folder in {final.parent for _, final in pairs}:
        try:
            _fsync(folder)
        except OSError:  # directories cannot be opened for fsync on every platform
            pass


_TEMPORARY = re.compile(r"^\.(?:partial|tmp|staging)-(\d+)(?:-|$)")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove this module's temporary files and staging folders in ``folder`` whose writing process is gone."""
    removed = []
    for entry in Path(folder).iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def temporary_path(path: str | Path) -> Path:
    """This process's temporary name for ``path``: beside it, hidden, same suffix (SimpleITK picks the format by it);
    :func:`remove_stale_temporaries` recognises it when the process dies."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a temporary file (write, fsync, rename): ``path`` is old or complete."""
    path = Path(path)
    temp = temporary_path(path)
    try:
        with open(temp, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        install([(temp, path)], verify=False)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    """Copy ``source`` to ``path`` through a temporary file, checking the copy's size before the rename."""
    source, path = Path(source), Path(path)
    temp = temporary_path(path)
    try:
        shutil.copyfile(source, temp)
        if temp.stat().st_size != source.stat().st_size:
            raise OSError(f"{path} was not written completely (the disk may be full); nothing was replaced.")
        install([(temp, path)], verify=False)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """Exclusive use of an output folder by one run (``with OutputLock(folder): ...``)."""

    def __init__(self, folder: str | Path, what: str = "NSLF run") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.held = False

    def acquire(self) -> OutputLock:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "what": self.what})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and self._stale(owner):
                    self.path.unlink(missing_ok=True)  # its process is gone: take the folder over
                    continue
                who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
                raise OutputBusyError(
                    f"{self.folder} is being written by another {owner.get('what', 'NSLF run') if owner else 'NSLF run'} "
                    f"({who}); wait for it to finish or choose another output folder."
                ) from None
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self.held = True
            remove_stale_temporaries(self.folder)
            return self
        raise OutputBusyError(f"{self.folder} could not be locked; choose another output folder.")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _stale(owner: dict) -> bool:
        return owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"])

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
