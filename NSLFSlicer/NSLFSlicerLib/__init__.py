"""NSLFSlicer's Qt-free library: everything heavier than the four classes of ``NSLFSlicer.py``.

Importable with ``slicer-core`` alone (plain Python). Importing it puts the ``nslfcore`` engine on
``sys.path``: the copy CMake installs next to the module (``<module dir>/nslfcore``), or, in a
source checkout, ``<repo>/NSLFCore``.

One job per file: :mod:`.app_setup` (scene + module logics), :mod:`.mrml_io` (volume nodes <->
arrays and :class:`nslfcore.data.case.Case`, storage), :mod:`.checks` (input checks),
:mod:`.resample`, :mod:`.assign` (inputs from node names), :mod:`.engine` (calls nslfcore),
:mod:`.segmentation`, :mod:`.terminology`, :mod:`.volume_rendering`, :mod:`.tables`,
:mod:`.hierarchy`, :mod:`.registrations` (a preprocessed run's transform nodes), :mod:`.logic` (:class:`NSLFLogicCore`), :mod:`.rendering` (offscreen PNG),
:mod:`.scene_io` (save results), :mod:`.dependencies` (pip / PyTorch installation inside Slicer),
:mod:`.testing` (the scenario shared by CI and the Slicer self-test).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: The module's folder (``NSLFSlicer/``).
MODULE_DIR = Path(__file__).resolve().parent.parent
#: Module resources (terminology, icons, UI).
RESOURCES_DIR = MODULE_DIR / "Resources"


def engine_paths() -> list[Path]:
    """Folders that may hold the ``nslfcore`` package: installed copy first, then the source checkout."""
    return [MODULE_DIR, MODULE_DIR.parent / "NSLFCore"]


def ensure_engine_on_path(folder: str | Path | None = None) -> None:
    """Put the engine on ``sys.path``: the only place in the module that touches it.

    With ``folder`` (a folder holding ``nslfcore/``, e.g. the one a parent process used, passed to a
    child process), that folder goes first. Without, the first of :func:`engine_paths` holding
    ``nslfcore/`` does, unless ``nslfcore`` is importable already.
    """
    if folder is not None:
        if sys.path[:1] != [str(folder)]:
            sys.path.insert(0, str(folder))
        return
    if importlib.util.find_spec("nslfcore") is not None:  # found, not imported: a later ``folder`` still wins
        return
    for candidate in engine_paths():
        if (candidate / "nslfcore" / "__init__.py").is_file():
            sys.path.insert(0, str(candidate))
            return


ensure_engine_on_path()
