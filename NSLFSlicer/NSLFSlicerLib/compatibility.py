"""The oldest 3D Slicer NSLFSlicer runs in, and the message for an older one.

Slicer 5.10 is the first with Python 3.12 and the segment terminology API the module uses
(``vtkSegment.SetTerminology``); older versions fail in ways a user cannot read. The module checks
the running application at start-up with :func:`running_slicer_problem` and says so plainly.
"""

from __future__ import annotations

import sys

#: The oldest supported Slicer (major, minor).
MINIMUM_SLICER: tuple[int, int] = (5, 10)
#: The Python that Slicer 5.10-5.12 ship.
MINIMUM_PYTHON: tuple[int, int] = (3, 12)


def version_problem(major: int, minor: int, python: tuple[int, int] | None = None) -> str | None:
    """A one-sentence message when Slicer ``major.minor`` (or its ``python``) is too old, else ``None``."""
    if (int(major), int(minor)) < MINIMUM_SLICER:
        need = ".".join(map(str, MINIMUM_SLICER))
        return (f"NSLF Fusion and Segmentation needs 3D Slicer {need} or later, but this is Slicer {major}.{minor}; "
                f"install Slicer {need} or newer from download.slicer.org.")  # fmt: skip
    if python is not None and tuple(python) < MINIMUM_PYTHON:
        return (f"NSLF Fusion and Segmentation needs Slicer's Python {'.'.join(map(str, MINIMUM_PYTHON))} or later, "
                f"but this Slicer runs Python {python[0]}.{python[1]}; install a current Slicer.")  # fmt: skip
    return None


def running_slicer_problem() -> str | None:
    """:func:`version_problem` of the running Slicer application; ``None`` outside the application."""
    try:
        import slicer

        app = slicer.app
        major, minor = int(app.majorVersion), int(app.minorVersion)
    except (ImportError, AttributeError):
        return None
    return version_problem(major, minor, sys.version_info[:2])
