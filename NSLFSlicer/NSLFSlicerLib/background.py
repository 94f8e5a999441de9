"""Fuse and segment in a separate process so Slicer never freezes; results enter the scene only at the end.

:class:`BackgroundRun` checks the input nodes (same checks and messages as the blocking
:meth:`NSLFLogicCore.process`), writes them as uncompressed NIfTI files (``.nii``: compressing on the GUI
thread took ten times as long) on the T1 grid into a work folder
(Slicer's temporary folder from the GUI), and runs :mod:`.inference_worker` with
:class:`.process_runner.ProcessRunner`. The GUI polls it; :meth:`BackgroundRun.finish` reads the
result files and writes the nodes through :meth:`NSLFLogicCore.writeResults` (the code the blocking
API uses), so both paths give the same nodes. Cancel ends the child and its children; the scene
is not touched.

With ``preprocess`` (raw scans, issue 32) each input is written on its own grid instead
(:meth:`NSLFLogicCore.prepareExam`); the child co-registers, skull-strips and aligns them to the
atlas first, its step messages arriving as progress events, and :meth:`BackgroundRun.finish` also
imports the brain mask and the registrations (:meth:`NSLFLogicCore.writePreprocessing`). A cancel
during any step ends the child and deletes the job's folder; the scene is not touched.

Closing the scene cancels the run (the logic tracks it from :meth:`BackgroundRun.start`), and
:meth:`BackgroundRun.finish` refuses to write against inputs or outputs removed meanwhile.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import engine, ensure_engine_on_path
from .logic import NSLFLogicCore, NSLFOutputs
from .process_runner import ProcessRunner, RunnerEvent, python_executable

ensure_engine_on_path()
import nslfcore  # noqa: E402
from nslfcore.data.io import read_image, write_image  # noqa: E402

WORKER = Path(__file__).with_name("inference_worker.py")


class BackgroundRun:
    """One fusion/segmentation job in a child process (arguments as :meth:`NSLFLogicCore.process`).

    Args:
        logic: the logic whose scene receives the results.
        t1, t1ce, t2, flair: input volume nodes (one may be ``None``: a missing sequence; only the
            given ones are written and processed).
        outputVolume, outputSegmentation, outputTable: nodes to fill in place, or ``None``.
        model: model id, ``.pt`` path or URL (``None``: the default model).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        resampleToReference, fuse, segment, mirror, preprocess: as for :meth:`NSLFLogicCore.process`.
        workdir: parent folder of the job's files (default: the system temporary folder).

    Raises :class:`.checks.InputError` at construction for bad inputs (nothing is started).
    """

    def __init__(
        self, logic: NSLFLogicCore, t1: Any = None, t1ce: Any = None, t2: Any = None, flair: Any = None, outputVolume: Any = None,
        outputSegmentation: Any = None, outputTable: Any = None, model: str | None = None, device: str = "auto",
        resampleToReference: bool = False, fuse: bool = True, segment: bool = True, workdir: str | Path | None = None,
        mirror: str | None = None, preprocess: bool = False,
    ) -> None:  # fmt: skip
        if model is not None and not isinstance(model, (str, Path)):
            raise TypeError("A background run takes a model id, file or URL, not a network object.")
        self.logic = logic
        self.device = device
        self.nodes = {"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair}
        self.outputs = (outputVolume, outputSegmentation, outputTable)
        logic.checkOutputVolume(self.nodes, outputVolume)  # an input chosen as the output: refused before anything runs
        if preprocess:
            self.folder = Path(tempfile.mkdtemp(prefix="NSLF-", dir=workdir))
            try:
                self.name, inputs = logic.prepareExam(self.nodes, self.folder)  # checked, then each on its own grid
            except BaseException:
                self.cleanup()
                raise
        else:
            self.name, case = logic.prepareCase(self.nodes, resampleToReference)
            self.folder = Path(tempfile.mkdtemp(prefix="NSLF-", dir=workdir))
            inputs = {m: str(write_image(case.images[m], case.geometry, self.folder / f"{m}.nii", np.float32))
                      for m in case.images}  # fmt: skip
        job = {
            "engine_path": str(Path(nslfcore.__file__).resolve().parents[1]), "inputs": inputs,
            "model": None if model is None else str(model), "models_dir": str(engine.models_folder()),
            "device": device, "fuse": fuse, "segment": segment, "mirror": mirror, "out": str(self.folder / "results"),
            "preprocess": preprocess,
        }  # fmt: skip
        job_file = self.folder / "job.json"
        job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")
        self.runner = ProcessRunner([python_executable(), str(WORKER), str(job_file)])

    def start(self) -> BackgroundRun:
        """Start the child; the logic cancels the run if its scene closes meanwhile (:meth:`NSLFLogicCore.track`)."""
        self.runner.start()
        self.logic.track(self)
        return self

    def poll(self) -> list[RunnerEvent]:
        """New events from the child (progress, log lines, result, error); never blocks.

        A run cancelled without waiting deletes its files here once its child has exited.
        """
        events = self.runner.poll()
        if self.runner.cancelled and self.runner.finished:
            self.cleanup()
        return events

    @property
    def finished(self) -> bool:
        return self.runner.finished

    def cancel(self, wait: bool = True) -> None:
        """End the child process tree and delete the job's files; the scene is unchanged.

        ``wait=False`` (the panel's Cancel) returns at once: :meth:`poll` finishes the job (SIGKILL after
        the grace period, files deleted once the child has exited).
        """
        self.runner.cancel(wait=wait)
        if wait:
            self.cleanup()

    def finish(self) -> NSLFOutputs:
        """Import the results into the scene (after :attr:`finished`); raises ``RuntimeError`` with the child's log on failure."""
        self.runner.poll()
        if not self.runner.delivered:  # a child that crashed after sending its result still delivered it
            message = self.runner.failure_message()
            self.cleanup()
            raise RuntimeError(message)
        result = self.runner.result
        try:
            fused = read_image(result["fused"])[0].astype(np.float32) if result.get("fused") else None
            labels = read_image(result["labels"])[0].astype(np.uint8) if result.get("labels") else None
            confidence = _confidence(result.get("confidence"))
            preprocessed = result.get("preprocessed")
            grid = self.nodes[preprocessed["reference"]] if preprocessed else None
            outputs = self.logic.writeResults(self.nodes, self.name, fused, labels, *self.outputs, confidence, grid)
            if preprocessed:
                self.logic.writePreprocessing(outputs, self.nodes, self.name, preprocessed)
            outputs.missing, outputs.message = result.get("missing"), result.get("message") or ""
            return outputs
        finally:
            self.cleanup()

    def wait(self, timeout: float | None = None) -> NSLFOutputs:
        """Block until done, then :meth:`finish` (for scripts and tests)."""
        self.runner.wait(timeout)
        return self.finish()

    def cleanup(self) -> None:
        self.logic.untrack(self)
        shutil.rmtree(self.folder, ignore_errors=True)


def _confidence(values: dict | None) -> Any:
    """The worker's confidence dictionary as an :class:`nslfcore.inference.Confidence` (``None`` stays ``None``)."""
    if values is None:
        return None
    from nslfcore.inference.confidence import Confidence  # torch: installed, the worker has just used it

    return Confidence.from_dict(values)
