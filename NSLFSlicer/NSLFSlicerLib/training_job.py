"""Training NSLF from Slicer: the dataset check, the ``nslf train`` command, start / graceful stop / resume.

The training runs as ``python -m nslfcore.cli train ... --events <run>/events.jsonl`` in a child
process (:class:`.process_runner.ProcessRunner`, ``PythonSlicer`` inside Slicer) and is followed
through its event file (:class:`.training_events.EventReader`). **Stop** writes the run folder's
``STOP`` file: the trainer finishes the current step, writes a checkpoint and exits ("stopped").
**Resume** starts the same command with ``--resume`` (the ``STOP`` file removed first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ensure_engine_on_path
from .process_runner import ProcessRunner, python_executable
from .training_events import EventReader, TrainingProgress

ensure_engine_on_path()
import nslfcore  # noqa: E402
from nslfcore.data.validation import check_folder  # noqa: E402

#: The run folder's graceful-stop file (``nslfcore.training.trainer.STOP_FILE``; not imported, to keep torch out of the GUI's start-up).
STOP_FILE = "STOP"

EVENTS_FILE = "events.jsonl"
STAGES = ("1", "2", "3", "all")


@dataclass(frozen=True)
class DatasetCheck:
    """A training folder's check: complete cases and one line per problem."""

    folder: Path
    complete: int
    incomplete: int
    rejected: int
    problems: list[str]

    @property
    def usable(self) -> bool:
        return self.complete >= 2

    def message(self) -> str:
        """What the panel shows under the folder selector."""
        head = f"{self.complete} complete case(s)"
        if self.incomplete or self.rejected:
            head += f", {self.incomplete} incomplete, {self.rejected} rejected (listed below)"
        if not self.usable:
            head += "; training needs at least 2 complete, labelled cases"
        return "\n".join([head + "."] + self.problems)


def check_dataset(folder: str | Path) -> DatasetCheck:
    """Check a BraTS-layout training folder (every file is read: labels required, grids must match)."""
    folder = Path(folder)
    if not folder.is_dir():
        return DatasetCheck(folder, 0, 0, 0, [f"{folder} is not a folder; choose the folder that holds the case folders."])
    report = check_folder(folder, require_label=True)
    problems = [p for case in report.cases for p in case.problems]
    if not report.cases:
        problems = [f"{folder} holds no cases; expected BraTS-layout case folders (e.g. BraTS2021_00000/*_t1.nii.gz)."]
    return DatasetCheck(folder, len(report.names("complete")), len(report.names("incomplete")),
                        len(report.names("rejected")), problems)  # fmt: skip


def parse_crop(text: str) -> tuple[int, int, int]:
    """``"64 160 160"`` (or with commas or x) -> ``(64, 160, 160)`` (z, y, x); ``ValueError`` with what to type otherwise."""
    parts = [p for p in text.replace(",", " ").replace("x", " ").split() if p]
    try:
        crop = tuple(int(p) for p in parts)
    except ValueError:
        crop = ()
    if len(crop) != 3 or any(c < 16 or c % 16 for c in crop):
        raise ValueError(f"Crop {text!r}: give three multiples of 16, z y x, e.g. 64 160 160.")
    return crop  # type: ignore[return-value]


@dataclass(frozen=True)
class TrainingSettings:
    """The panel's training choices (defaults: the ``fast`` configuration of the shipped model, all stages, the paper's rates).

    Crops are ``(z, y, x)`` voxels: ``fusion_crop`` for stages 1 and 2, ``segmentation_crop`` for stage 3.
    ``init`` is a model file to start from (fine-tuning; ``nslf train --init``), or ``None``.
    """

    data: str
    run_dir: str
    config: str = "fast"
    stage: str = "all"
    epochs: int = 30
    lr: float = 1e-4
    fusion_crop: tuple[int, int, int] = (64, 80, 80)
    segmentation_crop: tuple[int, int, int] = (64, 160, 160)
    device: str = "auto"
    init: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}.")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError("epochs must be at least 1 and the learning rate positive.")
        for crop in (self.fusion_crop, self.segmentation_crop):
            if len(crop) != 3 or any(c < 16 or c % 16 for c in crop):
                raise ValueError(f"crop sizes must be three multiples of 16 (z, y, x), got {crop}.")

    @property
    def events_file(self) -> Path:
        return Path(self.run_dir) / EVENTS_FILE

    def command(self, resume: bool = False) -> list[str]:
        """The ``nslf train`` command line of these settings."""
        args = [
            python_executable(), "-m", "nslfcore.cli", "train", "--data", self.data, "--out", self.run_dir,
            "--config", self.config, "--stage", self.stage, "--epochs", str(self.epochs), "--lr", str(self.lr),
            "--fusion-crop", *map(str, self.fusion_crop), "--segmentation-crop", *map(str, self.segmentation_crop),
            "--device", self.device, "--events", str(self.events_file),
        ]  # fmt: skip
        if self.init:
            args += ["--init", str(self.init)]
        return args + ["--resume"] if resume else args

    def replace(self, **changes: Any) -> TrainingSettings:
        return dataclasses.replace(self, **changes)


class TrainingJob:
    """One ``nslf train`` process followed through its events (poll it from a timer).

    Use :meth:`start` (or :meth:`resume`), then :meth:`poll` repeatedly; :meth:`stop` asks for a
    graceful stop, :meth:`cancel` kills the process tree (the last checkpoint stays usable).
    """

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        self.progress = TrainingProgress()
        self.runner: ProcessRunner | None = None
        self.reader: EventReader | None = None

    def start(self, resume: bool = False) -> TrainingJob:
        run_dir = Path(self.settings.run_dir)
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        events = self.settings.events_file
        self.reader = EventReader(events)
        if events.is_file():  # follow only this process's events (the file is appended to on resume)
            self.reader.offset = events.stat().st_size
        engine_path = str(Path(nslfcore.__file__).resolve().parents[1])
        self.runner = ProcessRunner(self.settings.command(resume), env={"PYTHONPATH": engine_path}).start()
        return self

    def resume(self) -> TrainingJob:
        """Continue the run folder's training from its checkpoints (``--resume``)."""
        return self.start(resume=True)

    def poll(self) -> list[dict[str, Any]]:
        """New events (also folded into :attr:`progress`); the process's own output goes to :meth:`log_tail`."""
        assert self.runner is not None and self.reader is not None, "start() first"
        self.runner.poll()
        events = self.reader.read()
        self.progress.update(events)
        return events

    @property
    def finished(self) -> bool:
        return self.runner is not None and self.runner.finished

    def stop(self) -> None:
        """Graceful stop: the trainer finishes its step, writes a checkpoint and exits."""
        Path(self.settings.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.settings.run_dir) / STOP_FILE).touch()

    def cancel(self) -> None:
        """End the training process tree now (the last epoch's checkpoint stays)."""
        if self.runner is not None:
            self.runner.cancel()

    def log_tail(self, lines: int = 20) -> list[str]:
        return [] if self.runner is None else self.runner.tail(lines)

    def failure_message(self) -> str | None:
        """Why the process failed (the trainer's error event, else the process's), or ``None`` if it did not."""
        if self.runner is None or not self.finished or self.runner.returncode in (0, 3):  # 3: stopped gracefully
            return None
        head = self.progress.error or f"nslf train ended with exit code {self.runner.returncode}."
        return head + "\n\nLast log lines:\n" + "\n".join(self.log_tail())
