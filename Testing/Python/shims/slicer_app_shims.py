"""Stand-ins for what only the Slicer application provides, so ``NSLFSlicer.py`` can be imported in tests.

``slicer-core`` gives the real ``slicer`` package (MRML, logics, ``slicer.util``) but not Slicer's
Qt layer: ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and
``slicer.i18n`` (translation through Qt).
:func:`install` registers minimal modules under those names: enough for the module file to be
imported and its logic (Qt-free) instantiated, nothing that pretends to be a widget.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def _qt_like(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def attribute(attr: str) -> Any:  # qt.QTimer, ctk.ctkCollapsibleButton, ...: inert classes
        if attr.startswith("__"):
            raise AttributeError(attr)
        cls = type(attr, (), {"__init__": lambda self, *a, **k: None})
        setattr(module, attr, cls)
        return cls

    module.__getattr__ = attribute  # type: ignore[attr-defined]
    return module


class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent: Any = None) -> None:
        pass


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent


class ScriptedLoadableModuleTest:
    pass


def install() -> None:
    """Register ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and ``slicer.i18n``."""
    import slicer

    sys.modules.setdefault("qt", _qt_like("qt"))
    sys.modules.setdefault("ctk", _qt_like("ctk"))
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget, ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls  # type: ignore[attr-defined]
    pnw.Choice = lambda *choices: ("Choice", choices)  # type: ignore[attr-defined]
    pnw.WithinRange = lambda low, high: ("WithinRange", low, high)  # type: ignore[attr-defined]
    i18n = types.ModuleType("slicer.i18n")  # Slicer's translation functions: identity without Qt
    i18n.tr = lambda text: text  # type: ignore[attr-defined]
    i18n.translate = lambda context, text: text  # type: ignore[attr-defined]
    for name, module in (("ScriptedLoadableModule", slm), ("parameterNodeWrapper", pnw), ("i18n", i18n)):
        sys.modules.setdefault(f"slicer.{name}", module)
        setattr(slicer, name, sys.modules[f"slicer.{name}"])
