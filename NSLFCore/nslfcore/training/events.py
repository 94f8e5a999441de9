"""The training event stream: one JSON object per line (the contract the Slicer panel reads).

Every event carries ``schema`` (:data:`SCHEMA_VERSION`), ``event`` (its type) and ``time``
(seconds since the epoch, float). The other fields per type are listed in :data:`EVENT_FIELDS`
(required field -> accepted JSON types) and documented in ``NSLFCore/README.md``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

from nslfcore.errors import NSLFError

SCHEMA_VERSION = 1

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))

#: Required fields per event type and the Python types their JSON values may take.
EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "run_start": {
        "run_dir": (str,),
        "stages": (list,),
        "config": (dict,),
        "data": (dict,),  # {"train": int, "valid": int, "source": str}
        "device": (str,),
        "world_size": (int,),
        "resume": (bool,),
    },
    "stage_start": {"stage": (int,), "epochs": (int,), "steps_per_epoch": (int,), "start_epoch": (int,)},
    "iteration": {
        "stage": (int,),
        "epoch": (int,),  # 1-based epoch being trained
        "step": (int,),  # optimiser steps in this stage so far
        "losses": (dict,),  # term -> float, includes "total"
        "lr": (float, int),
        "samples_per_s": _NUM,
        "eta_s": _OPT_NUM,  # remaining seconds of this stage
        "progress": _NUM,  # fraction of this stage done, 0..1
    },
    "validation": {"stage": (int,), "epoch": (int,), "metrics": (dict,)},  # metrics includes "loss"
    "checkpoint": {"stage": (int,), "epoch": (int,), "path": (str,), "best": (bool,)},
    "early_stop": {"stage": (int,), "epoch": (int,), "best_epoch": (int,), "patience": (int,)},
    "time_limit": {"stage": (int,), "epoch": (int,), "best_epoch": (int,), "limit_s": _NUM},  # options.time_limit_s
    "stage_end": {"stage": (int,), "epochs_run": (int,), "best_metric": _OPT_NUM, "best_checkpoint": (str, type(None))},
    "run_end": {"status": (str,)},  # "completed" | "stopped" | "failed"
    "error": {"message": (str,)},
}


class EventSchemaError(NSLFError, ValueError):
    """An event that does not follow :data:`EVENT_FIELDS`."""


def validate_event(event: dict[str, Any]) -> None:
    """Raise :class:`EventSchemaError` unless ``event`` follows the schema (extra fields are allowed)."""
    if not isinstance(event, dict):
        raise EventSchemaError(f"An event must be a JSON object, got {type(event).__name__}.")
    if event.get("schema") != SCHEMA_VERSION:
        raise EventSchemaError(f"Event schema {event.get('schema')!r} is not the supported {SCHEMA_VERSION}.")
    kind = event.get("event")
    if kind not in EVENT_FIELDS:
        raise EventSchemaError(f"Unknown event type {kind!r}.")
    if not isinstance(event.get("time"), _NUM):
        raise EventSchemaError(f"Event {kind!r} has no numeric 'time'.")
    for name, types in EVENT_FIELDS[kind].items():
        if name not in event:
            raise EventSchemaError(f"Event {kind!r} lacks the field {name!r}.")
        value = event[name]
        if isinstance(value, bool) and bool not in types:
            raise EventSchemaError(f"Event {kind!r} field {name!r} must not be a boolean.")
        if not isinstance(value, types):
            raise EventSchemaError(f"Event {kind!r} field {name!r} has type {type(value).__name__}.")
    if kind == "iteration" and not all(isinstance(v, _OPT_NUM) for v in event["losses"].values()):
        raise EventSchemaError("Event 'iteration' has non-numeric losses (null stands for NaN/Inf).")


def _finite(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class EventWriter:
    """Writes events as JSON lines to a file, to stdout (``"-"``), or nowhere (``None``).

    Each line is flushed at once so a reader sees it immediately. Only the process with
    ``enabled=True`` writes (rank 0 in distributed training).
    """

    def __init__(self, target: str | Path | None, enabled: bool = True) -> None:
        self._stream: IO[str] | None = None
        self._owns = False
        if target is None or not enabled:
            return
        if str(target) == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8")
            self._owns = True

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one event (validated first) and return it."""
        event = _finite({"schema": SCHEMA_VERSION, "event": kind, "time": time.time(), **fields})
        validate_event(event)
        if self._stream is not None:
            self._stream.write(json.dumps(event, sort_keys=True) + "\n")
            self._stream.flush()
        return event

    def close(self) -> None:
        if self._owns and self._stream is not None:
            self._stream.close()
        self._stream = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
