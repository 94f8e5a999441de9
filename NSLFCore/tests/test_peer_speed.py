"""The peer benchmark (benchmarks/peer_speed.py) end to end on a tiny phantom: every network timed, measured and compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_speed.py"
NETWORKS = {
    "nslf-shipped", "nslf-shipped-run", "nslf-compact", "nslf-compact-run", "nslf-fast", "nslf-fast-run", "nslf-paper",
    "nslf-paper-run", "segresnet16", "segresnet32", "nnunet",
}  # fmt: skip


@pytest.mark.slow
def test_quick_run_times_every_network_and_gives_ratios_to_the_shipped_model(tmp_path):
    out = tmp_path / "peer.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["rounds"] == 1 and result["reference"] == "nslf-shipped"
    assert result["environment"]["threads"] >= 1 and result["environment"]["torch"]
    networks = result["networks"]
    assert set(networks) == NETWORKS
    for name, row in networks.items():
        assert len(row["times_s"]) == 1 and min(row["times_s"]) > 0 and row["median_s"] > 0, name
        assert row["min_s"] <= row["median_s"] <= row["max_s"], name
        assert row["peak_rss_mib"] >= row["rss_before_call_mib"] > 0, name
        assert row["parameters"] > 0 and row["ratio_vs_nslf_shipped"] > 0, name
        if name.endswith("-run"):  # run() end to end: the mode it chose and its phases
            assert row["run"]["mode"] in ("whole", "sequential", "sliding") and row["run"]["timings_s"]["total"] > 0, name
        else:  # the network alone: both memory formats tried, the faster kept
            assert row["memory_format"] == min(row["format_trial_s"], key=row["format_trial_s"].get), name
    assert networks["nslf-shipped"]["ratio_vs_nslf_shipped"] == pytest.approx(1.0)
    assert "| SegResNet-16" in proc.stdout and "wrote" in proc.stdout
