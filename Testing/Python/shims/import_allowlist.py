"""Import ``NSLFSlicer.py`` allowing only what a fresh 3D Slicer >= 5.10 offers; print what was imported.

Run as ``python import_allowlist.py MODULE_DIR``: an import hook refuses every top-level package
outside :data:`ALLOWED` (the standard library, Slicer's bundled packages, Slicer's own modules and
the extension's), then the module file is imported, its logic instantiated and the default model
listed, as Slicer does when it loads the module, before any dependency is installed. Exits 0 and
prints a JSON line on success; a refused import raises ``ModuleNotFoundError`` naming it.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path

#: Packages a fresh 3D Slicer 5.10-5.12 bundles (Python 3.12), Slicer's own modules, the extension's.
SLICER_BUNDLED = {"numpy", "scipy", "SimpleITK", "vtk", "vtkmodules", "requests", "pydicom", "PIL", "packaging",
                  "urllib3", "certifi", "idna", "charset_normalizer"}  # fmt: skip
SLICER_OWN = {"slicer", "slicer_core", "qt", "ctk", "mrml", "MRMLCorePython"}
EXTENSION = {"NSLFSlicer", "NSLFSlicerLib", "nslfcore", "slicer_app_shims"}
#: Standard-library probes for other platforms (copy's Jython ``org``, platform's Windows ``_wmi``):
#: allowed to be looked up, they are simply not found here and the standard library goes on.
STDLIB_PROBES = {"org", "_wmi"}
#: SWIG's runtime looks this module up when SimpleITK 2.5.2 (Slicer 5.10's, built with SWIG 4.x < 4.3)
#: loads, and goes on when it is not found; newer SWIG registers ``swig_runtime_data5`` without a lookup.
SWIG_PROBES = {"swig_runtime_data4"}
ALLOWED = set(sys.stdlib_module_names) | SLICER_BUNDLED | SLICER_OWN | EXTENSION | STDLIB_PROBES | SWIG_PROBES


class Allowlist(importlib.abc.MetaPathFinder):
    """Refuses every top-level package not in :data:`ALLOWED`, and records the refusals."""

    refused: list[str] = []

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - the finder protocol
        top = name.split(".")[0]
        if top not in ALLOWED:
            self.refused.append(name)
            raise ModuleNotFoundError(f"{name} is not bundled with 3D Slicer (import refused by the allowlist)", name=name)
        return None


def main() -> None:
    module_dir = Path(sys.argv[1])
    sys.path[:0] = [str(module_dir), str(Path(__file__).parent)]
    sys.meta_path.insert(0, Allowlist())
    import slicer_app_shims

    slicer_app_shims.install()
    import NSLFSlicer  # what Slicer's module loader does

    logic = NSLFSlicer.NSLFSlicerLogic()
    refused_at_load = list(Allowlist.refused)  # loading the module and its logic: nothing may be refused
    from NSLFSlicerLib.model_manager import installed_models
    from NSLFSlicerLib.panel_state import DeviceList  # what the panel lists before its device query answers

    models = installed_models()
    devices = [label for label, _ in DeviceList(start=lambda: None).choices]
    top = sorted({name.split(".")[0] for name in sys.modules} - set(sys.stdlib_module_names))
    print(json.dumps({"python": sys.version.split()[0], "logic": type(logic).__name__, "models": len(models), "devices": devices,
                      "imported": top, "refused": refused_at_load}))  # fmt: skip


if __name__ == "__main__":
    main()
