"""Never freezing Slicer: the process runner (progress, cancel of the whole tree, failures) and background runs on real MRML."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.checks import InputError
from NSLFSlicerLib.process_runner import ProcessRunner, parse_line
from NSLFSlicerLib.testing import _labels_of, check_outputs


def child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text("import json, os, subprocess, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def run_to_end(runner: ProcessRunner, timeout: float = 60) -> list:
    events, deadline = [], time.monotonic() + timeout
    while not runner.finished:
        assert time.monotonic() < deadline, "child did not finish"
        events += runner.poll()
        time.sleep(0.02)
    return events + runner.poll()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_parse_line_reads_the_protocol_and_treats_the_rest_as_log():
    assert parse_line('{"progress": 0.25, "message": "window 1/4"}\n').progress == 0.25
    assert parse_line('{"progress": 7}').progress == 1.0  # clamped
    assert parse_line('{"result": {"fused": "f.nii.gz"}}').data == {"fused": "f.nii.gz"}
    assert parse_line('{"error": "no model"}').kind == "error"
    for text in ('{"progress": "half"}', "{not json", "plain text", '["list"]'):
        assert parse_line(text).kind == "log"


def test_progress_log_and_result_reach_the_parent(tmp_path):
    runner = ProcessRunner(child(tmp_path, """
        for i in range(1, 5):
            print(json.dumps({"progress": i / 4, "message": f"step {i}"}), flush=True)
            print(f"log line {i}", flush=True)
        print(json.dumps({"result": {"answer": 42}}), flush=True)
    """)).start()
    events = run_to_end(runner)
    assert [e.progress for e in events if e.kind == "progress"] == [0.25, 0.5, 0.75, 1.0]
    assert runner.message == "step 4" and runner.result == {"answer": 42} and runner.succeeded
    assert runner.tail(2) == ["log line 3", "log line 4"]


def test_cancel_ends_the_child_and_its_children_within_5_seconds(tmp_path):
    pids = tmp_path / "pids.txt"
    runner = ProcessRunner(child(tmp_path, f"""
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{grandchild.pid}}")
        print(json.dumps({{"progress": 0.1, "message": "working"}}), flush=True)
        signal_ignored = __import__("signal").signal(15, lambda *a: None)  # ignores SIGTERM: needs SIGKILL
        time.sleep(120)
    """)).start()
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().count(" ")) or runner.progress < 0.1:
        assert time.monotonic() < deadline
        runner.poll()
        time.sleep(0.05)
    child_pid, grandchild_pid = map(int, pids.read_text().split())
    assert alive(child_pid) and alive(grandchild_pid)
    start = time.monotonic()
    runner.cancel()
    while (alive(child_pid) or alive(grandchild_pid)) and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert not alive(child_pid) and not alive(grandchild_pid)
    assert time.monotonic() - start < 5
    assert runner.cancelled and not runner.succeeded and runner.failure_message().startswith("Cancelled.")


def test_failure_surfaces_the_error_and_the_last_log_lines(tmp_path):
    runner = ProcessRunner(child(tmp_path, """
        for i in range(30):
            print(f"line {i}", flush=True)
        print(json.dumps({"error": "Model file m.pt does not exist; check the path."}), flush=True)
        sys.exit(1)
    """)).start()
    run_to_end(runner)
    message = runner.failure_message(lines=5)
    assert not runner.succeeded and message.startswith("Model file m.pt does not exist")
    assert "line 29" in message and "line 24" not in message
    crash = ProcessRunner(child(tmp_path, "print('about to crash', flush=True); sys.exit(3)\n")).start()
    run_to_end(crash)
    assert "exit code 3" in crash.failure_message() and "about to crash" in crash.failure_message()


def test_background_run_gives_the_blocking_results_and_touches_the_scene_only_at_the_end(fresh_inputs, scenario, tmp_path):
    logic, nodes = fresh_inputs
    count = logic.scene.GetNumberOfNodes()
    job = BackgroundRun(logic, **nodes, model=str(scenario.model_path), device="cpu", workdir=tmp_path).start()
    events = []
    while not job.finished:
        events += job.poll()
        assert logic.scene.GetNumberOfNodes() == count  # nothing imported while the child runs
        time.sleep(0.05)
    outputs = job.finish()
    fractions = [e.progress for e in events + job.poll() if e.kind == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    labels = _labels_of(logic, outputs, nodes)
    check_outputs(nodes, outputs, labels)
    assert np.array_equal(labels, _labels_of(scenario.logic, scenario.outputs, scenario.nodes))
    assert np.allclose(np.asarray(outputs.fused.GetImageData().GetPointData().GetScalars()),
                       np.asarray(scenario.outputs.fused.GetImageData().GetPointData().GetScalars()), atol=1e-6)  # fmt: skip
    assert not list(tmp_path.iterdir()), "the job's files are deleted"


def test_cancelled_or_failed_background_runs_leave_the_scene_unchanged(fresh_inputs, tmp_path):
    logic, nodes = fresh_inputs
    count = logic.scene.GetNumberOfNodes()
    job = BackgroundRun(logic, **nodes, model=str(tmp_path / "missing.pt"), device="cpu", workdir=tmp_path).start()
    with pytest.raises(RuntimeError, match="missing.pt does not exist"):
        job.wait(120)
    assert logic.scene.GetNumberOfNodes() == count and not list(tmp_path.iterdir())
    job = BackgroundRun(logic, **nodes, device="cpu", workdir=tmp_path).start()
    job.cancel()
    assert logic.scene.GetNumberOfNodes() == count and not list(tmp_path.iterdir())
    with pytest.raises(InputError):
        BackgroundRun(logic, nodes["t1"], nodes["t1"], nodes["t2"], nodes["flair"], workdir=tmp_path)
    assert not list(tmp_path.iterdir())
