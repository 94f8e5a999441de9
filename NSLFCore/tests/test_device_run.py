"""The prepared GPU run (benchmarks/device_run.py) dry-run on the CPU: every section runs and writes its results.

A GPU is lent rarely and for minutes, so the script must be known to work before one is used:
this runs it end to end on tiny procedural phantoms (``--dry-run``) and checks what comes back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nslfcore.model_store import load_model
from nslfcore.training.events import validate_event

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_run.py"


@pytest.mark.slow
def test_dry_run_fills_every_section_and_returns_a_usable_model(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--device", "cpu", "--budget", "900", "--train-seconds", "30",
         "--workers", "2",
         "--configs", "compact", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "device_run.json").read_text())
    sections = {name: s["status"] for name, s in results["sections"].items()}
    assert sections == dict.fromkeys(
        ("environment", "train_throughput", "profile", "bench_case", "inference_compact", "training", "evaluation"), "ok"
    ), sections
    assert results["environment"]["torch"] and results["environment"]["cpu_count"] >= 1
    assert results["budget_s"] == 900 and results["dry_run"] is True
    # Throughput: ours and the public loop for stages 2 and 3.
    rows = results["train_throughput"]["compact"]
    assert [r["stage"] for r in rows] == [2, 3] and all(r["speedup"] > 0 for r in rows)
    assert set(results["profile"]) == {"stage2", "stage3"} and results["profile"]["stage3"]["top_ops"]
    # Inference: users' path, fp32 / bf16 passes with their agreement, the public procedure.
    inference = results["inference"]["compact"]
    assert inference["run"]["mode"] in ("whole", "sequential") and inference["run"]["total_median_s"] > 0
    assert inference["variants"]["fp32"]["status"] == "ok" and inference["variants"]["bf16"]["status"] == "ok"
    agreement = inference["variants"]["bf16"]["agreement"]
    assert set(agreement["label_dice_vs_fp32"]) == {"ET", "TC", "WT"} and agreement["fused_max_abs_diff"] < 0.2
    assert inference["variants"]["bf16+compile"]["status"].startswith("skipped")  # never compiled in a dry run
    assert inference["public"]["extrapolated_s"] > 0 and inference["speedup_vs_public"]["run_total"] > 0
    # Training: three stages chained, each within its time limit, the newest best model returned.
    training = results["training"]
    assert sorted(training["stages"]) == ["1", "2", "3"] and training["model_stage"] == 3
    assert sum(spec["time_limit_s"] for spec in training["recipe"].values()) <= 30  # --train-seconds
    assert all(training["stages"][stage]["steps"] >= 1 for stage in training["recipe"])
    model, info = load_model(out / "model.pt")
    assert info.stage == 3 and info.config["name"] == "fast" and training["config"] == "fast"
    assert training["recipe"]["3"]["augmentation"] == "strong-bright" and training["recipe"]["3"]["et_fraction"] > 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for event in events:
        validate_event(event)
    assert sorted({e["stage"] for e in events if e["event"] == "stage_end"}) == [1, 2, 3]
    stage3 = [e for e in events if e["event"] == "validation" and e["stage"] == 3]
    assert stage3 and all({"case_dice_et", "case_dice_tc", "case_dice_wt"} <= set(e["metrics"]) for e in stage3)
    # Evaluation: the new and the shipped model on the same held-out cases.
    evaluation = results["evaluation"]
    assert evaluation["cases"] == 2 and set(evaluation["mean_dice"]) == {"new", "shipped"}
    assert isinstance(evaluation["new_beats_shipped"], bool)


@pytest.mark.slow
def test_dry_run_of_stage_3_alone_from_a_previous_model(tmp_path):
    """The follow-up run: stage 3 only, from a previous run's model, on new generator seeds, no held-out cases."""
    from nslfcore.config import PRESETS
    from nslfcore.model_store import save_model
    from nslfcore.models import NSLF

    init = save_model(NSLF(PRESETS["fast"]), tmp_path / "previous.pt", stage=3, epoch=1)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--device", "cpu", "--budget", "600", "--train-seconds", "15",
         "--workers", "2", "--sections", "training", "--train-stages", "3", "--init", str(init),
         "--test-cases", "0", "--train-cases", "4", "--train-seeds", "7", "8",
         "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "device_run.json").read_text())
    assert {name: s["status"] for name, s in results["sections"].items()} == {"environment": "ok", "training": "ok"}
    assert results["data"]["cases"] == {"bench": 0, "test": 0, "train": 4}
    training = results["training"]
    assert list(training["stages"]) == ["3"] and training["init"] == str(init) and training["model_stage"] == 3
    cases = sorted(p.name for p in (tmp_path / "work" / "train").iterdir())
    assert cases == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00500", "BraTS2021_00501"]  # two seed ranges
    _, info = load_model(out / "model.pt")
    assert info.stage == 3 and info.config["name"] == "fast"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in events if e["event"] == "stage_start"} == {3}


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ["no-gmn"])
def test_dry_run_trains_an_ablation(tmp_path, ablation):
    """``--ablation no-gmn``: the three stages of a network without the GMN, recorded in the model file."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--device", "cpu", "--budget", "600", "--train-seconds", "12",
         "--workers", "0", "--sections", "training", "--ablation", ablation, "--test-cases", "0", "--train-cases", "4",
         "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "device_run.json").read_text())
    assert results["training"]["ablation"] == ablation and sorted(results["training"]["stages"]) == ["1", "2", "3"]
    model, info = load_model(out / "model.pt")
    assert info.stage == 3 and info.config["use_gmn"] is False and model.gmn is None


@pytest.mark.slow
def test_dry_run_trains_baselines_with_the_stage_3_recipe(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--device", "cpu", "--budget", "600", "--workers", "0",
         "--sections", "baselines", "--baseline-archs", "unet", "voxresnet", "--baseline-seconds", "6",
         "--test-cases", "0", "--train-cases", "4", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "device_run.json").read_text())
    assert results["sections"]["baselines"]["status"] == "ok"
    section = results["baselines"]
    assert section["recipe"]["augmentation"] == "strong-bright" and section["recipe"]["et_fraction"] > 0
    for arch in ("unet", "voxresnet"):
        model, info = load_model(out / f"baseline_{arch}.pt")
        assert not model.fuses and model.segments and info.epoch >= 1


def test_a_stopped_stage_ends_the_run_with_status_3_and_starts_nothing_later(tmp_path, stopped_training, capsys):
    """After a stage's STOP file (``train`` returns "stopped" once its state is saved) the run must
    start no later stage and no later section, and exit 3."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import device_run
    finally:
        sys.path.remove(str(SCRIPT.parent))
    out = tmp_path / "out"
    code = device_run.main(["--dry-run", "--device", "cpu", "--budget", "600", "--train-seconds", "30",
                            "--workers", "2", "--sections", "training", "evaluation", "--out", str(out),
                            "--work", str(tmp_path / "work")])  # fmt: skip
    assert code == 3 and stopped_training == ["stage1"]
    results = json.loads((out / "device_run.json").read_text())
    assert results["sections"]["training"]["status"] == "stopped"
    assert "stage 1 stopped by" in results["sections"]["training"]["error"]
    assert results["sections"]["evaluation"]["status"] == "skipped: the run was stopped"
    assert list(results["training"]["stages"]) == ["1"] and results["training"]["stages"]["1"]["status"] == "stopped"
    assert "evaluation" not in results and not (out / "model.pt").exists()
    assert "no later section starts" in capsys.readouterr().out
