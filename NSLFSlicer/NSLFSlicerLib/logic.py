"""NSLFLogicCore: the Qt-free logic of the module (blocking calls usable from the Python console).

Data path: four volume nodes -> :func:`.checks.check_inputs` -> arrays ``(z, y, x)`` (resampled to
the T1 grid if asked) -> :class:`nslfcore.data.case.Case` (LPS) -> :mod:`.engine` -> fused volume
node, segmentation node, tumour volumes table (RAS, exactly the T1 node's IJK-to-RAS).

One of the four inputs may be ``None`` (any three sequences work): the engine gives the missing one
no fusion weight, the results take the grid of the first given input (T1 unless T1 is missing,
:func:`.checks.reference_modality`), and :attr:`NSLFOutputs.message` says which sequence was
missing and what that costs (also logged).

Raw scans (issue 32, ``preprocess=True``): the inputs may lie on different grids, with the skull
on, in any orientation and spacing. Each given node is written on its own grid into a temporary
folder (:meth:`NSLFLogicCore.prepareExam`) and the engine co-registers, skull-strips and aligns
them to the atlas before NSLF (:func:`nslfcore.inference.run` with ``preprocess``). The results
then take the grid of the exam's reference, T1ce when given (:func:`.checks.preprocess_reference`,
:attr:`NSLFOutputs.reference`), and the run adds the brain mask as a "Brain" segment and the
registrations as linear transform nodes (:mod:`.registrations`), next to the results in the
subject hierarchy (:meth:`NSLFLogicCore.writePreprocessing`).

Nothing in the scene changes until the computation has finished: a failed check or a cancel
(:meth:`NSLFLogicCore.requestCancel`, checked between phases and at every engine progress step)
leaves the scene as it was. Outputs passed in are filled in place; otherwise new nodes are made.

Closing the scene (``vtkMRMLScene.StartCloseEvent``, which ``Clear`` and File > Close Scene send)
cancels what runs on its nodes: the blocking run stops at its next step and every background run
the logic tracks (:meth:`NSLFLogicCore.track`, :class:`.background.BackgroundRun`) ends its child.
Results are never written against nodes that have left the scene: :meth:`NSLFLogicCore.writeResults`
refuses with :class:`.checks.InputError` naming the node.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import engine, ensure_engine_on_path
from .app_setup import SlicerContext, default_context
from .assign import assign_inputs
from .checks import LABELS, InputError, check_inputs, output_problem, reference_modality
from .hierarchy import place_with
from .mrml_io import array_from_volume, array_view, case_from_nodes, geometry_of, new_node, set_volume, write_volume
from .registrations import load_transform
from .resample import resample_to
from .segmentation import fill_brain_segmentation, fill_segmentation
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
    lacked (or ``None``), ``message``: the one sentence saying so and what it costs (``""`` with all four).

    ``reference``: the input node whose grid the results are on. With preprocessing, ``brain``: a
    segmentation node holding the "Brain" segment (the brain mask on ``reference``'s grid), and
    ``transforms``: sequence -> linear transform node of its registration to the reference (to-parent:
    the sequence onto the reference), and ``"atlas"`` -> the reference's alignment to the atlas.
    """

    fused: Any = None
    segmentation: Any = None
    table: Any = None
    missing: str | None = None
    message: str = ""
    confidence: Any = None  # the segmentation's nslfcore.inference.Confidence (None without segmentation)
    reference: Any = None
    brain: Any = None
    transforms: dict[str, Any] = field(default_factory=dict)


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
        self.workdir: str | Path | None = None  # parent of a preprocessed run's temporary folder (None: the system's)
        self._cancel = threading.Event()
        self._models: dict[tuple[str, str], Any] = {}
        self._jobs: list[Any] = []  # background runs on this scene's nodes (each has cancel()), cancelled when it closes
        # The scene holds the callback; through a weak reference it does not hold this logic, so no
        # reference cycle runs through VTK (the garbage collector may break one after VTK has freed
        # the scene, which crashes).
        this = weakref.ref(self)

        def on_scene_start_close(caller: Any, event: Any) -> None:
            logic = this()
            if logic is not None:
                logic._onSceneStartClose()

        self.scene.AddObserver(self.scene.StartCloseEvent, on_scene_start_close)

    @property
    def scene(self) -> Any:
        return self.context.scene

    # ----------------------------------------------------------------------------- public API
    def requestCancel(self) -> None:
        """Ask the running computation to stop at the next check; it raises :class:`Cancelled`."""
        self._cancel.set()

    def track(self, job: Any) -> None:
        """Cancel ``job`` (anything with ``cancel()``) when the scene closes, until :meth:`untrack`."""
        if job not in self._jobs:
            self._jobs.append(job)

    def untrack(self, job: Any) -> None:
        if job in self._jobs:
            self._jobs.remove(job)

    def _onSceneStartClose(self, caller: Any = None, event: Any = None) -> None:
        """The scene is closing: its nodes are going, so every run on them is cancelled (see the module docstring)."""
        self._cancel.set()
        for job in list(self._jobs):
            job.cancel()
            self.untrack(job)

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
        preprocess: bool = False,
        keepPreprocessed: str | Path | None = None,
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
            preprocess: the inputs are raw scans: register and skull-strip them first (see the module
                docstring; needs deepbet). ``resampleToReference`` is then ignored.
            keepPreprocessed: with ``preprocess``, a folder that receives the intermediate results
                (:meth:`nslfcore.preprocess.pipeline.PreparedExam.write`: brain mask, co-registered and
                atlas-space sequences, transforms).

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
        self.checkOutputVolume(nodes, outputVolume)
        with tempfile.TemporaryDirectory(prefix="NSLF-", dir=self.workdir) if preprocess else contextlib.nullcontext() as folder:
            if preprocess:
                name, source = self.prepareExam(nodes, folder, lambda: step(0.05, "Writing the raw volumes"))
            else:
                name, source = self.prepareCase(nodes, resampleToReference, lambda: step(0.05, "Reading volumes"))
            step(0.1, "Loading the model")
            device = engine.resolve_device(device)
            net = self._model(model, device)
            result = engine.run(source, net, device, fuse, segment, lambda f, m: step(0.15 + 0.75 * f, m), mirror, preprocess)
            message = "" if result.missing is None else engine.missing_sentence(result.missing, model, fuse, segment)
            if message:
                log.info(message)
            step(0.9, "Writing results to the scene")
            files = None
            if result.preprocessed is not None:
                from .inference_worker import write_preprocessed

                files = write_preprocessed(result.preprocessed, Path(folder) / "preprocessed")
                if keepPreprocessed is not None:
                    result.preprocessed.write(keepPreprocessed)
            outputs = self.writeResults(nodes, name, result.fused, result.labels, outputVolume, outputSegmentation,
                                        outputTable, result.confidence, files and nodes[files["reference"]])  # fmt: skip
            if files is not None:
                self.writePreprocessing(outputs, nodes, name, files)
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

    def prepareExam(self, nodes: dict[str, Any], folder: str | Path, checked: Callable[[], None] | None = None
                    ) -> tuple[str, dict[str, str]]:  # fmt: skip
        """Check the input nodes of a raw exam and write each on its own grid into ``folder`` (LPS NIfTI, float32).

        As :meth:`prepareCase` but the grids may differ. Returns ``(case name, {modality: file})``,
        the files named ``<case>.<modality>.nii`` (the engine names the case after them; uncompressed, as
        this runs on Slicer's GUI thread and compressing takes ten times as long as writing).
        Raises :class:`.checks.InputError` (scene unchanged).
        """
        check_inputs(nodes, resample_to_reference=True)
        if checked is not None:
            checked()
        reference = reference_modality(nodes)
        name = case_name(nodes[reference].GetName(), reference)
        stem = re.sub(r"[^\w-]+", "_", name) or "case"
        return name, {m: str(write_volume(n, Path(folder) / f"{stem}.{m}.nii")) for m, n in nodes.items() if n is not None}

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
        grid: Any = None,
    ) -> NSLFOutputs:
        """Put results on the T1 grid into the scene: fused volume (VR), segmentation, tumour volumes table.

        ``fused`` float32 and ``labels`` uint8 BraTS 2021 are ``(z, y, x)`` arrays on the grid of the
        ``grid`` node (default: T1's, the first given input's when T1 is missing) or ``None``. Given
        output nodes are filled in place; otherwise new nodes are made. ``confidence`` (an
        :class:`nslfcore.inference.Confidence` or ``None``) adds the confidence columns to the table
        (:func:`.tables.fill_table`).
        """
        self.checkStillInScene([*nodes.values(), volume, segmentation, table, grid])
        t1 = grid or nodes[reference_modality(nodes)]
        out = NSLFOutputs(confidence=confidence, reference=t1)
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

    def checkOutputVolume(self, nodes: dict[str, Any], outputVolume: Any) -> None:
        """Raise :class:`.checks.InputError` when ``outputVolume`` is one of the inputs (:func:`.checks.output_problem`)."""
        problem = output_problem(nodes, outputVolume)
        if problem:
            raise InputError([problem])

    def checkStillInScene(self, nodes: list[Any]) -> None:
        """Raise :class:`.checks.InputError` naming each node (``None`` skipped) that is no longer in this scene.

        A node the user deleted, or that a scene close removed, during a run must not receive its results.
        """
        gone = [node.GetName() for node in nodes if node is not None and node.GetScene() is not self.scene]
        if gone:
            raise InputError([f"'{name}' was removed from the scene during the run; the results were not imported. "
                              "Select the inputs and outputs again and rerun." for name in gone])  # fmt: skip

    def writePreprocessing(self, outputs: NSLFOutputs, nodes: dict[str, Any], name: str, files: dict[str, Any]) -> None:
        """Add what preprocessing found to the scene and to ``outputs``: the brain mask and the registrations.

        ``files`` are :func:`.inference_worker.write_preprocessed`'s (the brain mask on the reference's
        grid, ``.tfm`` transforms). The "Brain" segment goes into a new segmentation node, each
        registration into a new linear transform node (:func:`.registrations.load_transform`), all
        placed next to the results in the subject hierarchy.
        """
        from nslfcore.data.io import read_image

        reference = nodes[files["reference"]]
        mask = read_image(files["brain_mask"])[0]
        if mask.shape != array_view(reference).shape:
            raise ValueError(f"The brain mask {files['brain_mask']} is not on the grid of '{reference.GetName()}'.")
        label = LABELS[files["reference"]]
        outputs.brain = new_node(self.scene, "vtkMRMLSegmentationNode", f"{name} NSLF brain mask")
        fill_brain_segmentation(outputs.brain, mask, reference)
        for sequence, path in files["registrations"].items():
            outputs.transforms[sequence] = load_transform(self.scene, path, f"{name} {LABELS[sequence]} to {label}")
        outputs.transforms["atlas"] = load_transform(self.scene, files["atlas"], f"{name} {label} to atlas")
        place_with([outputs.brain, *outputs.transforms.values()], reference)

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
