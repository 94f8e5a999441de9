"""Run a child process without blocking: structured progress lines, a cancel that ends its whole process tree, the log tail.

The GUI polls (:meth:`ProcessRunner.poll`, e.g. from a ``qt.QTimer`` every 100 ms); nothing here
needs Qt, so CI tests it in plain Python.

Child -> parent protocol, one line per message on stdout (stderr is merged into it)::

    {"progress": 0.42, "message": "inference: window 3/8"}     progress (fraction in [0, 1])
    {"result": {...}}                                          what the child produced (paths, numbers)
    {"error": "one sentence"}                                  why the child failed

Any other line is log text. The child runs in its own process group (POSIX session, or a new
process group on Windows), so :meth:`ProcessRunner.cancel` ends it and every process it started.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _in_slicer_application() -> bool:
    try:
        import slicer

        return hasattr(slicer, "app")
    except ImportError:
        return False


def python_executable(in_slicer: bool | None = None) -> str:
    """The Python to run children with: ``PythonSlicer`` inside Slicer, else this interpreter.

    Inside the Slicer application ``sys.executable`` is Slicer itself, which would open a second
    Slicer instead of running the child: there, ``PythonSlicer`` (on ``PATH``, or beside the
    executable) is the only choice, and its absence raises ``FileNotFoundError`` with what to do.
    ``in_slicer``: ``None`` asks whether ``slicer.app`` exists.
    """
    inside = _in_slicer_application() if in_slicer is None else in_slicer
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    found = shutil.which("PythonSlicer") or next(
        (str(p) for p in (Path(sys.executable).parent / name, Path(sys.executable).parent.parent / "bin" / name) if p.is_file()),
        None,
    )  # fmt: skip
    if found:
        return found
    if inside:
        raise FileNotFoundError(
            f"PythonSlicer was not found on PATH or next to {sys.executable}, so NSLF cannot start its worker "
            "process; reinstall 3D Slicer."
        )
    return sys.executable


def child_process_options() -> dict[str, Any]:
    """``subprocess.Popen`` options: own process group (so cancel ends the tree) and, on Windows, no console window."""
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        return {"creationflags": flags}
    return {"start_new_session": True}


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """A child's environment: this process's plus ``env``, unbuffered output, and UTF-8 on its standard streams.

    ``PYTHONIOENCODING=utf-8``: the parent reads children as UTF-8, and a child on a Windows code page
    or a C locale would otherwise fail (``UnicodeEncodeError``) or garble a non-ASCII path or message.
    """
    return {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def format_eta(fraction: float, elapsed_s: float) -> str:
    """Progress text for a bar: ``"42% (about 3 min left)"``; no estimate before 2 % or after the end."""
    percent = f"{100 * fraction:.0f}%"
    if fraction < 0.02 or fraction >= 1.0:
        return percent
    left = elapsed_s * (1.0 - fraction) / fraction
    when = f"{left:.0f} s" if left < 90 else f"{left / 60:.0f} min"
    return f"{percent} (about {when} left)"


@dataclass
class RunnerEvent:
    """One parsed child line: ``kind`` is ``"progress"``, ``"result"``, ``"error"`` or ``"log"``."""

    kind: str
    text: str = ""
    progress: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


def parse_line(line: str) -> RunnerEvent:
    """The :class:`RunnerEvent` of one child output line (see the module docstring)."""
    text = line.rstrip("\r\n")
    if text.startswith("{"):
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            message = None
        if isinstance(message, dict):
            if isinstance(message.get("progress"), (int, float)):
                fraction = min(max(float(message["progress"]), 0.0), 1.0)
                return RunnerEvent("progress", str(message.get("message", "")), fraction)
            if isinstance(message.get("result"), dict):
                return RunnerEvent("result", "", None, message["result"])
            if isinstance(message.get("error"), str):
                return RunnerEvent("error", message["error"])
    return RunnerEvent("log", text)


class ProcessRunner:
    """A child process whose output is read on a background thread and handed out by :meth:`poll`.

    Args:
        args: the command line (``[python_executable(), script, ...]``).
        cwd, env: working folder and environment of the child (``env`` is added to this process's).
        log_lines: how many log lines :meth:`tail` keeps.
    """

    def __init__(self, args: Sequence[str], cwd: str | Path | None = None, env: dict[str, str] | None = None,
                 log_lines: int = 200) -> None:  # fmt: skip
        self.args = [str(a) for a in args]
        self.cwd = None if cwd is None else str(cwd)
        self.env = child_environment(env)
        self.process: subprocess.Popen | None = None
        self.progress = 0.0
        self.message = ""
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.cancelled = False
        self._log: deque[str] = deque(maxlen=log_lines)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._kill_at: float | None = None  # after a cancel that did not wait: when poll() sends SIGKILL

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> ProcessRunner:
        """Start the child in its own process group; returns ``self``."""
        if self.process is not None:
            raise RuntimeError("This runner was already started; make a new ProcessRunner.")
        options = child_process_options()
        self.process = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", bufsize=1, **options,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="nslf-runner-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def running(self) -> bool:
        """Whether the child is still alive (its output may still be queued; see :attr:`finished`)."""
        return self.process is not None and self.process.poll() is None

    @property
    def finished(self) -> bool:
        """The child has exited and all its output has been polled."""
        return self.process is not None and self.process.poll() is not None and self._reader is not None and (
            not self._reader.is_alive() and self._lines.empty()
        )

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def succeeded(self) -> bool:
        return self.finished and self.returncode == 0 and self.error is None and not self.cancelled

    @property
    def delivered(self) -> bool:
        """The child has ended after sending its result and no error, and was not cancelled, whatever its exit code.

        A worker whose interpreter crashes on the way out (a CUDA or OpenMP teardown) after writing its
        result files and the result line has done its job; :attr:`succeeded` would throw that result away.
        """
        return self.finished and self.result is not None and self.error is None and not self.cancelled

    def poll(self) -> list[RunnerEvent]:
        """Events parsed from the lines the child wrote since the last call (never blocks).

        After :meth:`cancel` with ``wait=False`` it also ends the child's process group with SIGKILL once the
        grace period is over (or once the child has exited, for grandchildren that outlive it).
        """
        if self._kill_at is not None and self.process is not None and (
            self.process.poll() is not None or time.monotonic() >= self._kill_at
        ):
            self._kill_group(signal.SIGKILL)
            self._kill_at = None
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            event = parse_line(line)
            if event.kind == "progress":
                self.progress, self.message = event.progress or 0.0, event.text
            elif event.kind == "result":
                self.result = event.data
            elif event.kind == "error":
                self.error = event.text
                self._log.append(f"ERROR: {event.text}")
            else:
                self._log.append(event.text)
            events.append(event)
        return events

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits (and its output is read); returns the exit code."""
        assert self.process is not None, "start() first"
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        self.poll()
        return code

    def cancel(self, grace: float = 2.0, wait: bool = True) -> None:
        """End the child and every process it started: SIGTERM to its group, SIGKILL after ``grace`` seconds.

        On Windows ``taskkill /T /F`` ends the tree (without a console window). ``wait``: return once the
        child has exited (scripts, tests, scene close); ``wait=False`` (the panel's Cancel button) returns at
        once and :meth:`poll` sends the SIGKILL when ``grace`` is over, so the GUI never blocks on it.
        """
        if self.process is None:
            return
        self.cancelled = True
        if self.process.poll() is not None:
            self._kill_group(signal.SIGKILL if os.name != "nt" else None)  # grandchildren may outlive it
            return
        if os.name == "nt":
            command = ["taskkill", "/T", "/F", "/PID", str(self.process.pid)]
            subprocess.run(command, capture_output=True, **child_process_options())  # no console window flashes
        else:
            self._kill_group(signal.SIGTERM)
            self._kill_at = time.monotonic() + grace
            if not wait:
                return
            while self.process.poll() is None and time.monotonic() < self._kill_at:
                time.sleep(0.05)
            self._kill_group(signal.SIGKILL)
            self._kill_at = None
        if wait:
            self.process.wait(10)

    def _kill_group(self, sig: Any) -> None:
        if os.name == "nt" or self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)  # the child leads its own session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass

    # ------------------------------------------------------------------------------- reporting
    def tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` log lines (errors included)."""
        return list(self._log)[-lines:]

    def failure_message(self, lines: int = 20) -> str:
        """Why the child failed, for an error dialog: its error (or exit code) and its last log lines."""
        if self.cancelled:
            head = "Cancelled."
        elif self.error:
            head = self.error
        else:
            head = f"The background process ended with exit code {self.returncode}."
        tail = "\n".join(self.tail(lines))
        return f"{head}\n\nLast log lines:\n{tail}" if tail else head
