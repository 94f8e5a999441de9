"""The raw-exam benchmark (benchmarks/preprocess_speed.py) end to end on one simulated raw exam: every step timed
and measured, Dice on the native grid and on the clean case, the targets judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "preprocess_speed.py"
STEPS = {"startup", "load_model", "read", "coregister", "brain", "atlas", "resample", "normalise", "network", "paste",
         "restore", "write"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-step peak RSS needs Linux's /proc/self/clear_refs")
def test_one_raw_exam_is_timed_and_measured_per_step_and_scored_on_its_native_grid(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", "1", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["seed"] == 2000 and result["indices"] == [1000] and result["threads"] == 2
    (row,) = result["rows"]
    assert "error" not in row and row["on_native_grid"] is True
    assert set(row["seconds"]) == STEPS and set(row["peak_mib"]) == STEPS
    assert row["total_s"] >= sum(row["seconds"].values()) - 1e-6 and min(row["seconds"].values()) >= 0
    assert row["peak_process_mib"] == max(row["peak_mib"].values()) > 100
    assert row["step_mismatch_s"] < 0.5  # the progress messages still mark the pipeline's steps
    for key in ("dice_clean", "dice_raw", "dice_gap"):
        assert set(row[key]) == {"ET", "TC", "WT"}
    assert all(0.0 <= row[k][g] <= 1.0 for k in ("dice_clean", "dice_raw") for g in ("ET", "TC", "WT"))
    assert set(result["summary"]["targets"]) == {"dice_within_0.05_every_exam", "dice_within_0.05_on_mean",
                                                 "total_within_90_s_every_exam", "peak_within_4_gib_every_exam"}  # fmt: skip
    assert "| **whole exam** |" in proc.stdout and "wrote" in proc.stdout
