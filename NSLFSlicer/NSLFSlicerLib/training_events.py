"""Reading the training event stream (``nslf train --events FILE``) while it is being written.

:class:`EventReader` tails the JSON-lines file: it keeps its byte offset, holds back a partial last
line until its newline arrives, skips malformed lines with a warning, and refuses events of
another schema (:class:`nslfcore.training.events.EventSchemaError`): a panel must never show
numbers it misreads. :class:`TrainingProgress` folds the events into what the panel shows: stage,
epoch, overall fraction, ETA, status and the last losses.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.training.events import EventSchemaError, validate_event  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["EventReader", "EventSchemaError", "TrainingProgress"]


class EventReader:
    """Incremental reader of one events file; :meth:`read` returns the complete, valid events added since the last call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self.skipped = 0

    def read(self) -> list[dict[str, Any]]:
        """New events (validated). Raises :class:`EventSchemaError` for an event of another schema or shape."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        events = []
        for number, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                event = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                self.skipped += 1
                log.warning("Skipping a malformed line of %s (%s): %r", self.path, error, raw[:120])
                continue
            try:
                validate_event(event)
            except EventSchemaError as error:
                raise EventSchemaError(
                    f"{self.path} holds an event this NSLFSlicer cannot read ({error}); the training engine and the "
                    "extension do not match: update the NSLFSlicer extension."
                ) from None
            events.append(event)
        return events


@dataclass
class TrainingProgress:
    """What the panel shows, folded from the events (:meth:`update`)."""

    stages: list[int] = field(default_factory=list)
    stage: int | None = None
    epoch: int = 0
    epochs: int = 0
    stage_progress: float = 0.0
    eta_s: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    best_checkpoints: dict[int, str] = field(default_factory=dict)
    status: str = "not started"
    error: str | None = None

    def update(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            kind = event["event"]
            if kind == "run_start":
                self.stages, self.status, self.error = list(event["stages"]), "running", None
            elif kind == "stage_start":
                self.stage, self.epochs, self.epoch = event["stage"], event["epochs"], event["start_epoch"]
                self.stage_progress = event["start_epoch"] / max(event["epochs"], 1)
            elif kind == "iteration":
                self.stage, self.epoch = event["stage"], event["epoch"]
                self.stage_progress, self.eta_s = float(event["progress"]), event["eta_s"]
                self.losses = {k: v for k, v in event["losses"].items() if v is not None}
            elif kind == "validation":
                self.validation = {k: v for k, v in event["metrics"].items() if isinstance(v, (int, float))}
            elif kind == "stage_end":
                self.stage_progress = 1.0
                if event["best_checkpoint"]:
                    self.best_checkpoints[event["stage"]] = event["best_checkpoint"]
            elif kind == "error":
                self.error = event["message"]
            elif kind == "run_end":
                self.status = event["status"]

    @property
    def fraction(self) -> float:
        """Fraction of the whole run done (stages weighted equally), in [0, 1]."""
        if not self.stages or self.stage not in self.stages:
            return 0.0
        done = self.stages.index(self.stage)
        return min((done + self.stage_progress) / len(self.stages), 1.0)

    @property
    def best_checkpoint(self) -> str | None:
        """The best checkpoint of the last finished stage (what "add to models" offers)."""
        return self.best_checkpoints[max(self.best_checkpoints)] if self.best_checkpoints else None

    def summary(self) -> str:
        """One line: stage, epoch, loss, ETA."""
        if self.stage is None:
            return self.status
        eta = f", about {self.eta_s / 60:.0f} min left in this stage" if self.eta_s else ""
        loss = f", loss {self.losses['total']:.4f}" if "total" in self.losses else ""
        return f"stage {self.stage}, epoch {self.epoch}/{self.epochs}{loss}{eta} ({self.status})"
