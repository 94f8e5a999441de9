"""NSLFLogicCore: the Qt-free logic of the module (blocking calls usable from the Python console).

Data path: four volume nodes -> :func:`.checks.check_inputs` -> arrays ``(z, y, x)`` (resampled to
the T1 grid if asked) -> :class:`nslfcore.data.case.Case` (LPS) -> :mod:`.engine` -> fused volume
node, segmentation node, tumour volumes table (RAS, exactly the T1 node's IJK-to-RAS).

One of the four inputs may be ``None`` (any three sequences work): the engine gives the missing one
no fusion weight, the results take the grid of the first given input (T1 unless T1 is missing,
:func:`.checks.reference_modality`), and :attr:`NSLFOutputs.message` says which sequence was
missing and what that costs (also logged).

Nothing in the scene changes until the computation has finished: a failed check or a cancel
(:meth:`NSLFLogicCore.requestCancel`, checked between phases and at every engine progress step)
leaves the scene as it was. Outputs passed in are filled in place; otherwise new nodes are made.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import engine, ensure_engine_on_path
from .app_setup import SlicerContext, default_context
from .assign import assign_inputs
from .checks import check_inputs, reference_modality
from .hierarchy import place_with
from .mrml_io import array_from_volume, case_from_nodes, geometry_of, new_node, set_volume
from .resample import resample_to
from .segmentation import fill_segmentation
from .tables import TABLE_NAME, fill_table
from .volume_rendering import set_window_level, setup_volume_rendering

ensure_engine_on_path()
from nslfcore.data.modality_names import ALIASES, SEPARATORS  # noqa: E402

ProgressCallback = Callable[[float, str], None]
log = logging.getLogger(__name__)


class Cancelled(RuntimeError):
    """The run was cancelled with :meth:`NSLFLogicCore.requestCancel`; the scene is unchanged."""


@dataclass
class NSLFOutputs:
    """Nodes written by a run (``None`` for what was not asked); ``missing``: the modality the inputs
    lacked (or ``None``), ``message``: the one sentence saying so and what it costs (``""`` with all four)."""

    fused: Any = None
    segmentation: Any = None
    table: Any = None
    missing: str | None = None
    message: str = ""
    confidence: Any = None  # the segmentation's nslfcore.inference.Confidence (None without segmentation)


def case_name(t1_name: str, modality: str = "t1") -> str:
    """The case's name from the T1 node name (or the ``modality`` node's, when T1 is missing): the name
    without a last token naming that modality (``_t1``, ``-t1n``, `` T1w``...)."""
    parts = re.fullmatch(rf"(.+?){SEPARATORS.pattern}([^-_.\s]+)", t1_name)
    return parts[1] if parts and ALIASES.get(parts[2].lower()) == modality else t1_name


class NSLFLogicCore:
    """Fuse four MR volumes and segment the tumour with NSLF, writing MRML nodes.

    Args:
        context: scene and module logics (:func:`.app_setup.default_context` if ``None``).
        scene: used to build a context when ``context`` is ``None``.
    """

    def __init__(self, context: SlicerContext | None = None, scene: Any = None) -> None:
        self.context = context or default_context(scene)
        self._cancel = threading.Event()
        self._models: dict[tuple[str, str], Any] = {}

    @property
    def scene(self) -> Any:
        return self.context.scene

    # ----------------------------------------------------------------------------- public API
    def requestCancel(self) -> None:
        """Ask the running computation to stop at the next check; it raises :class:`Cancelled`."""
        self._cancel.set()

    def assignInputs(self, scene_or_nodes: Any = None) -> dict[str, Any]:
        """``{"t1": node, "t1ce": ..., "t2": ..., "flair": ...}`` from node names (see :mod:`.assign`)."""
        return assign_inputs(self.scene if scene_or_nodes is None else scene_or_nodes)

    def fuse(self, t1: Any = None, t1ce: Any = None, t2: Any = None, flair: Any = None, outputVolume: Any = None,
             **options: Any) -> Any:  # fmt: skip
        """Fuse the volumes (one may be ``None``); returns the fused ``vtkMRMLScalarVolumeNode`` (options: :meth:`process`)."""
        return self.process(t1, t1ce, t2, flair, outputVolume=outputVolume, fuse=True, segment=False, **options).fused

    def segment(self, t1: Any = None, t1ce: Any = None, t2: Any = None, flair: Any = None, outputSegmentation: Any = None,
                **options: Any) -> Any:  # fmt: skip
        """Segment the tumour; returns the ``vtkMRMLSegmentationNode`` (also fills the tumour volumes table)."""
        return self.process(
            t1, t1ce, t2, flair, outputSegmentation=outputSegmentation, fuse=False, segment=True, **options
        ).segmentation

    def process(
        self,
        t1: Any = None,
        t1ce: Any = None,
        t2: Any = None,
        flair: Any = None,
        outputVolume: Any = None,
        outputSegmentation: Any = None,
        outputTable: Any = None,
        model: Any = None,
        device: str = "auto",
        progressCallback: ProgressCallback | None = None,
        resampleToReference: bool = False,
        fuse: bool = True,
        segment: bool = True,
        mirror: str | None = None,
    ) -> NSLFOutputs:
        """Fuse and/or segment; blocking. Returns :class:`NSLFOutputs`.

        Args:
            t1, t1ce, t2, flair: scalar volume nodes, on one grid (or see ``resampleToReference``);
                one of them may be ``None`` (see the module docstring).
            outputVolume, outputSegmentation, outputTable: nodes to fill in place, or ``None`` for new ones.
            model: model id, ``.pt`` path or URL (``None``: the default model), or an ``NSLF`` instance.
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
            progressCallback: ``callback(fraction, message)``, fraction in [0, 1].
            resampleToReference: resample T1ce, T2 and FLAIR to the T1 grid instead of refusing.
            fuse, segment: which results to compute.
            mirror: test-time mirroring, ``"none"``, ``"lr"`` or ``"all"`` (``None``: the engine's default); the
                segmentation's confidence goes into the table and :attr:`NSLFOutputs.confidence`.

        Raises:
            checks.InputError: bad inputs (message names the node); scene unchanged.
            Cancelled: :meth:`requestCancel` was called; scene unchanged.
        """
        self._cancel.clear()
        report = progressCallback or (lambda fraction, message: None)
        nodes = {"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair}

        def step(fraction: float, message: str) -> None:
            if self._cancel.is_set():
                raise Cancelled("NSLF was cancelled; nothing was changed in the scene.")
            report(fraction, message)

        step(0.0, "Checking inputs")
        name, case = self.prepareCase(nodes, resampleToReference, lambda: step(0.05, "Reading volumes"))
        step(0.1, "Loading the model")
        device = engine.resolve_device(device)
        net = self._model(model, device)
        result = engine.run(case, net, device, fuse, segment, lambda f, m: step(0.15 + 0.75 * f, m), mirror)
        message = "" if result.missing is None else engine.missing_sentence(result.missing, model, fuse, segment)
        if message:
            log.info(message)
        step(0.9, "Writing results to the scene")
        outputs = self.writeResults(nodes, name, result.fused, result.labels, outputVolume, outputSegmentation, outputTable,
                                    result.confidence)  # fmt: skip
        outputs.missing, outputs.message = result.missing, message
        report(1.0, "Done")
        return outputs

    def prepareCase(
        self, nodes: dict[str, Any], resampleToReference: bool = False, checked: Callable[[], None] | None = None
    ) -> tuple[str, Any]:
        """Check the input nodes and read them as a :class:`nslfcore.data.case.Case` on the T1 grid (LPS).

        One node may be ``None`` (a missing sequence; the grid is then the first given input's).
        Returns ``(case name, case)``. Raises :class:`.checks.InputError` (scene unchanged).
        ``checked`` is called between the checks and the reading.
        """
        check_inputs(nodes, resampleToReference)
        if checked is not None:
            checked()
        reference = reference_modality(nodes)
        name = case_name(nodes[reference].GetName(), reference)
        arrays = self._resampled(nodes) if resampleToReference else None
        return name, case_from_nodes(nodes, name, arrays, reference)

    def writeResults(
        self,
        nodes: dict[str, Any],
        name: str,
        fused: np.ndarray | None,
        labels: np.ndarray | None,
        volume: Any = None,
        segmentation: Any = None,
        table: Any = None,
        confidence: Any = None,
    ) -> NSLFOutputs:
        """Put results on the T1 grid into the scene: fused volume (VR), segmentation, tumour volumes table.

        ``fused`` float32 and ``labels`` uint8 BraTS 2021 are ``(z, y, x)`` arrays on the T1 node's
        grid (the first given input's when T1 is missing) or ``None``. Given output nodes are filled
        in place; otherwise new nodes are made. ``confidence`` (an :class:`nslfcore.inference.Confidence`
        or ``None``) adds the confidence columns to the table (:func:`.tables.fill_table`).
        """
        t1 = nodes[reference_modality(nodes)]
        out = NSLFOutputs(confidence=confidence)
        if fused is not None:
            out.fused = volume or new_node(self.scene, "vtkMRMLScalarVolumeNode", f"{name} NSLF fused")
            set_volume(out.fused, fused.astype(np.float32), t1)
            if out.fused.GetDisplayNode() is None:
                out.fused.CreateDefaultDisplayNodes()
            set_window_level(out.fused, fused)
            setup_volume_rendering(self.context.volume_rendering, out.fused, fused)
        if labels is not None:
            out.segmentation = segmentation or new_node(self.scene, "vtkMRMLSegmentationNode", f"{name} NSLF segmentation")
            fill_segmentation(out.segmentation, labels, t1)
            out.table = table or new_node(self.scene, "vtkMRMLTableNode", TABLE_NAME)
            fill_table(out.table, labels, tuple(t1.GetSpacing()), confidence)  # type: ignore[arg-type]
        place_with([n for n in (out.fused, out.segmentation, out.table) if n is not None], t1)
        return out

    # ----------------------------------------------------------------------------- internals
    def _resampled(self, nodes: dict[str, Any]) -> dict[str, np.ndarray]:
        first = reference_modality(nodes)
        reference = geometry_of(nodes[first])
        return {m: resample_to(array_from_volume(n), geometry_of(n), reference)
                for m, n in nodes.items() if m != first and n is not None}  # fmt: skip

    def _model(self, spec: Any, device: str) -> Any:
        if not isinstance(spec, (str, type(None))):
            return engine.load_model(spec, device)
        key = (str(spec), device)
        if key not in self._models:
            self._models[key] = engine.load_model(spec, device)
        return self._models[key]
