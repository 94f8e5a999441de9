"""Children of the panel (runs, the device query, pip, rendering) speak UTF-8 whatever the locale (issue 33)."""

from __future__ import annotations

import signal
import sys
import time

from NSLFSlicerLib.process_runner import ProcessRunner, child_environment

NON_ASCII = "Patiënt Müller – T1ce ✓"


def test_children_write_utf8_even_under_an_ascii_locale():
    code = f"import sys; print(sys.stdout.encoding); print({NON_ASCII!a}, flush=True)"  # the command line itself stays ASCII
    ascii_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}  # a console on code page 437 alike
    runner = ProcessRunner([sys.executable, "-c", code], env=ascii_locale).start()
    runner.wait(60)
    assert runner.succeeded, runner.failure_message()
    assert runner.tail() == ["utf-8", NON_ASCII]


def test_the_child_environment_adds_utf8_and_unbuffered_output_to_what_it_is_given():
    env = child_environment({"NSLF_X": "1", "PYTHONIOENCODING": "latin-1"})
    assert env["NSLF_X"] == "1" and env["PYTHONIOENCODING"] == "utf-8" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"]  # this process's environment is kept


def test_the_panels_cancel_returns_at_once_and_polling_ends_a_child_that_ignores_sigterm():
    """``cancel(wait=False)``: the child, which ignores SIGTERM, is still alive when cancel returns, so cancel
    did not wait for it; only the SIGKILL that :meth:`ProcessRunner.poll` sends after the grace period ends it."""
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(120)")  # fmt: skip
    runner = ProcessRunner([sys.executable, "-c", code]).start()
    for _ in range(600):  # the child has set its handler once it says ready (at most 60 s)
        if "ready" in [event.text for event in runner.poll()]:
            break
        time.sleep(0.1)
    runner.cancel(grace=0.3, wait=False)
    assert runner.cancelled and runner.running  # returned while the child still runs
    for _ in range(600):
        runner.poll()
        if runner.finished:
            break
        time.sleep(0.1)
    assert runner.finished and runner.returncode == -signal.SIGKILL and not runner.succeeded


def test_a_background_run_cancelled_without_waiting_deletes_its_files_once_its_child_has_ended(tmp_path):
    from NSLFSlicerLib.background import BackgroundRun

    class Logic:  # what BackgroundRun needs of the logic once it is made: tracking
        def track(self, job):
            pass

        def untrack(self, job):
            pass

    job = BackgroundRun.__new__(BackgroundRun)  # the child and its folder, without input nodes
    job.logic, job.folder = Logic(), tmp_path / "NSLF-job"
    job.folder.mkdir()
    job.runner = ProcessRunner([sys.executable, "-c", "import time; time.sleep(120)"])
    job.start()
    job.cancel(wait=False)
    for _ in range(600):
        job.poll()
        if job.finished:
            break
        time.sleep(0.1)
    job.poll()
    assert job.runner.cancelled and not job.folder.exists()


def test_cancel_on_windows_ends_the_tree_with_taskkill_without_a_console_window(monkeypatch):
    """Windows' path, simulated: ``taskkill /T /F`` gets the no-window flags; ``wait=False`` does not wait for the child."""
    import subprocess
    import types

    from NSLFSlicerLib import process_runner

    calls = []
    monkeypatch.setattr(process_runner.os, "name", "nt")
    monkeypatch.setattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)
    monkeypatch.setattr(subprocess, "CREATE_NO_WINDOW", 0x8000000, raising=False)
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append((args, kw)))
    runner = ProcessRunner(["child"])
    waited = []
    runner.process = types.SimpleNamespace(pid=4242, poll=lambda: None, wait=lambda timeout=None: waited.append(timeout))
    runner.cancel(wait=False)
    ((args, options),) = calls
    assert args == ["taskkill", "/T", "/F", "/PID", "4242"] and options["creationflags"] & 0x8000000
    assert runner.cancelled and waited == []
