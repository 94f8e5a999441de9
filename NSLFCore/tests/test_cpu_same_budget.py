"""The same-budget comparison (benchmarks/cpu_same_budget.py) dry-run on tiny phantoms: NSLF and a
baseline train with the same stage-3 budget, land as model files, resume, and are scored."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    # Each method's stage-3 validation per epoch, against the samples seen: the same x for both.
    curves = json.loads((out / "validation_curves.json").read_text())
    assert curves["nslf"][-1]["samples"] == curves["unet"][-1]["samples"] == unet["samples"]
    assert all(0 <= point[f"dice_{r}"] <= 1 for points in curves.values() for point in points for r in ("et", "tc", "wt"))
    assert (out / "validation_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = (out / "compare" / "tables.md").read_text()
    assert "| nslf |" in tables and "| unet |" in tables
    # Scored again with a sliding window (nothing retrained), into a folder of its own.
    _run([*common, "--methods", "nslf", "unet", "--window", "16", "32", "32"])
    windowed = out / "compare-window-16x32x32"
    assert json.loads((windowed / "settings.json").read_text())["window"] == [16, 32, 32]
    assert "| nslf |" in (windowed / "tables.md").read_text() and (out / "compare" / "tables.md").read_text() == tables

    # Resumable: a rerun skips the trained models (their files are not rewritten) and trains only the new one.
    before = (out / "models" / "nslf.pt").stat().st_mtime_ns
    proc = _run([*common, "--methods", "nslf", "unet", "fused-only", "--no-evaluate"])
    assert "nslf: " in proc.stdout and "exists, skipped" in proc.stdout
    assert (out / "models" / "nslf.pt").stat().st_mtime_ns == before
    summary = json.loads((out / "same_budget.json").read_text())
    assert summary["trained"]["fused-only"]["ablation"] == "fused-only"
    _, info = load_model(out / "models" / "fused-only.pt")
    assert info.config["segmenter_input"] == "fused_only"

    # An interrupted stage (here: NSLF's stage 3 marked unfinished, its model file not yet written)
    # is resumed from its checkpoint, not retrained from scratch or taken as done.
    state_file = out / "work" / "nslf" / "stage3" / "stage3.pt"
    state = torch.load(state_file, weights_only=True)
    state["progress"]["finished"] = False
    torch.save(state, state_file)
    (out / "models" / "nslf.pt").unlink()
    proc = _run([*common, "--methods", "nslf", "--no-evaluate"])
    assert "nslf stage 3: 1 epochs, crop (32, 64, 64), resuming after epoch 1" in proc.stdout
    assert "nslf stage 1" not in proc.stdout and "nslf stage 2" not in proc.stdout
    assert json.loads((out / "same_budget.json").read_text())["trained"]["nslf"]["stages"]["3"]["resumed_after_epoch"] == 1
    _, info = load_model(out / "models" / "nslf.pt")
    assert info.stage == 3

    # Another recipe into the same folder is refused before anything trains or is overwritten.
    proc = subprocess.run([sys.executable, str(SCRIPT), *common[:-3], "--recipe", "cpu-304", "--methods", "unet"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2 and "another recipe (dry-run)" in proc.stderr
    assert json.loads((out / "same_budget.json").read_text())["recipe_name"] == "dry-run"


def _recipes():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import cpu_same_budget
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return cpu_same_budget


def test_the_default_recipe_shares_stages_1_2_with_the_first_and_trains_1216_stage3_samples():
    module = _recipes()
    first, default = module.RECIPES["cpu-304"], module.RECIPES["cpu-1216"]
    assert first[1] == default[1] and first[2] == default[2]  # one NSLF stage 1-2 serves both
    training_cases = 19  # nslf phantom --n 24 --seed 1000, the seeded 80/20 split
    samples = {name: training_cases * r[3]["samples_per_case"] * r[3]["epochs"] for name, r in module.RECIPES.items()}
    assert samples == {"cpu-304": 304, "cpu-1216": 1216}
    voxels = {name: samples[name] * math.prod(r[3]["crop"]) for name, r in module.RECIPES.items()}
    assert voxels["cpu-1216"] / voxels["cpu-304"] == pytest.approx(1.6875)
    # Everything but the crop and the epochs is the same stage-3 recipe.
    strip = ("crop", "epochs")
    assert {k: v for k, v in first[3].items() if k not in strip} == {k: v for k, v in default[3].items() if k not in strip}


def test_a_stopped_nslf_stage_ends_the_run_before_any_later_stage_or_method(tmp_path, stopped_training, capsys):
    """After a stage's STOP file (``train`` returns "stopped" once its state is saved) the script must
    exit 3 and start nothing else, so the next run resumes."""
    module = _recipes()
    out = tmp_path / "out"
    code = module.main(["--data", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--out", str(out),
                        "--dry-run", "--methods", "nslf", "unet", "--no-evaluate"])  # fmt: skip
    assert code == 3 and stopped_training == ["stage1"]
    assert "nslf stage 1 stopped by" in capsys.readouterr().out
    assert not (out / "models" / "nslf.pt").exists() and not (out / "work" / "unet").exists()
    assert json.loads((out / "same_budget.json").read_text())["trained"] == {}


def test_device_reaches_every_training_in_float32_without_autocast_or_tf32(tmp_path, monkeypatch):
    """``--device cuda`` (benchmarks/same_budget_gpu.sh) must train NSLF and the baselines on that device
    with the CPU rows' arithmetic: bf16 autocast off in the options and TF32 off in torch's backends.
    Recorded without a GPU: the trainers are replaced by ones that note what they were given."""
    import nslfcore.baseline as baseline
    import nslfcore.training.run as training_run

    module = _recipes()
    seen: list[tuple[str, str, bool]] = []

    def nslf_train(data, run_dir, config, options, device, *args, **kwargs):
        seen.append(("nslf", device, options.amp))
        return "stopped"

    class BaselineSeen(Exception):
        pass

    def baseline_train(data, out, *, device, recipe, **kwargs):
        seen.append(("unet", device, recipe.amp))
        raise BaselineSeen

    monkeypatch.setattr(training_run, "train", nslf_train)
    monkeypatch.setattr(baseline, "train_baseline", baseline_train)
    common = ["--data", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--dry-run", "--no-evaluate",
              "--device", "cuda:1"]  # fmt: skip
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        assert module.main([*common, "--out", str(tmp_path / "a"), "--methods", "nslf"]) == 3
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(BaselineSeen):
            module.main([*common, "--out", str(tmp_path / "b"), "--methods", "unet"])
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    assert seen == [("nslf", "cuda:1", False), ("unet", "cuda:1", False)]
    assert json.loads((tmp_path / "a" / "same_budget.json").read_text())["device"] == "cuda:1"
