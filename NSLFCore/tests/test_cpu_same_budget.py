"""The same-budget comparison (benchmarks/cpu_same_budget.py) dry-run on tiny phantoms: NSLF and a
baseline train with the same stage-3 budget, land as model files, resume, and are scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nslfcore.baseline import load_baseline
from nslfcore.data.phantom import write_phantom_dataset
from nslfcore.model_store import load_model

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_same_budget.py"


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_nslf_and_a_baseline_train_with_the_same_stage3_budget_resume_and_are_scored(tmp_path):
    write_phantom_dataset(tmp_path / "train", 5, seed=3, tiny=True, size=(48, 64, 64))
    write_phantom_dataset(tmp_path / "test", 1, seed=4, tiny=True, size=(48, 64, 64), start=100)
    out = tmp_path / "out"
    common = ["--data", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--out", str(out), "--dry-run",
              "--workers", "0"]  # fmt: skip
    _run([*common, "--methods", "nslf", "unet"])

    summary = json.loads((out / "same_budget.json").read_text())
    nslf, unet = summary["trained"]["nslf"], summary["trained"]["unet"]
    assert sorted(nslf["stages"]) == ["1", "2", "3"] and nslf["ablation"] == "none"
    # The same budget: the baseline trains exactly as many stage-3 samples as NSLF's stage 3.
    assert unet["samples"] == nslf["stages"]["3"]["samples"] > 0
    assert summary["recipe"]["3"]["augmentation"] == "strong-bright" and summary["recipe"]["3"]["et_fraction"] > 0
    _, info = load_model(out / "models" / "nslf.pt")
    assert info.stage == 3 and info.config["name"] == "fast"
    assert load_baseline(out / "models" / "unet.pt").arch == "unet"
    tables = (out / "compare" / "tables.md").read_text()
    assert "| nslf |" in tables and "| unet |" in tables

    # Resumable: a rerun skips the trained models (their files are not rewritten) and trains only the new one.
    before = (out / "models" / "nslf.pt").stat().st_mtime_ns
    proc = _run([*common, "--methods", "nslf", "unet", "fused-only", "--no-evaluate"])
    assert "nslf: " in proc.stdout and "exists, skipped" in proc.stdout
    assert (out / "models" / "nslf.pt").stat().st_mtime_ns == before
    summary = json.loads((out / "same_budget.json").read_text())
    assert summary["trained"]["fused-only"]["ablation"] == "fused-only"
    _, info = load_model(out / "models" / "fused-only.pt")
    assert info.config["segmenter_input"] == "fused_only"
