"""NSLFSlicer's Qt-free library: everything heavier than the four classes of ``NSLFSlicer.py``.

Importable with ``slicer-core`` alone (plain Python). Importing it puts the ``nslfcore`` engine on
``sys.path``: the copy CMake installs next to the module (``<module dir>/nslfcore``), or, in a
source checkout, ``<repo>/NSLFCore``.

One job per file: :mod:`.app_setup` (scene + module logics), :mod:`.mrml_io` (volume nodes <->
arrays and :class:`nslfcore.data.case.Case`, storage), :mod:`.checks` (input checks),
:mod:`.resample`, :mod:`.assign` (inputs from node names), :mod:`.engine` (calls nslfcore),
:mod:`.segmentation`, :mod:`.terminology`, :mod:`.volume_rendering`, :mod:`.tables`,
:mod:`.hierarchy`, :mod:`.logic` (:class:`NSLFLogicCore`), :mod:`.rendering` (offscreen PNG),
:mod:`.scene_io` (save results), :mod:`.dependencies` (pip / PyTorch installation inside Slicer),
:mod:`.testing` (the scenario shared by CI and the Slicer self-test).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The module's folder (``NSLFSlicer/``).
MODULE_DIR = Path(__file__).resolve().parent.parent
#: Module resources (terminology, icons, UI).
RESOURCES_DIR = MODULE_DIR / "Resources"


def engine_paths() -> list[Path]:
    """Folders that may hold the ``nslfcore`` package: installed copy first, then the source checkout."""
    return [MODULE_DIR, MODULE_DIR.parent / "NSLFCore"]


def ensure_engine_on_path() -> None:
    """Put the first folder holding ``nslfcore/`` on ``sys.path`` unless ``nslfcore`` is already importable."""
    try:
        import nslfcore  # noqa: F401
        return
    except ImportError:
        pass
    for folder in engine_paths():
        if (folder / "nslfcore" / "__init__.py").is_file():
            sys.path.insert(0, str(folder))
            return


ensure_engine_on_path()
