"""Nested three-stage training on tiny phantoms: loss goes down, exact resume, kill safety, events, DDP, bad args."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nslfcore.cli import main as nslf_main
from nslfcore.config import PRESETS
from nslfcore.data.phantom import write_phantom_dataset
from nslfcore.training.checkpoint import load_checkpoint
from nslfcore.training.events import EventSchemaError, validate_event
from nslfcore.training.options import TrainingOptions
from nslfcore.training.run import train

SMALL = ["--config", "compact", "--fusion-crop", "32", "32", "32", "--segmentation-crop", "32", "48", "48", "--deterministic"]
SMALL_OPTIONS = dict(fusion_crop=(32, 32, 32), segmentation_crop=(32, 48, 48), deterministic=True)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-phantoms")
    write_phantom_dataset(folder, 6, seed=3, tiny=True)
    return folder


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_stage_run_lowers_every_stage_loss(tiny_data, tmp_path):
    run_dir, events = tmp_path / "run", tmp_path / "events.jsonl"
    code = nslf_main(
        ["train", "--data", str(tiny_data), "--out", str(run_dir), "--epochs", "5", "--lr", "1e-3",
         "--fine-tune-lr", "1e-4", "--events", str(events), *SMALL]
    )  # fmt: skip
    assert code == 0
    stream = _events(events)
    for event in stream:
        validate_event(event)
    assert stream[0]["event"] == "run_start" and stream[-1] == stream[-1] | {"event": "run_end", "status": "completed"}
    losses: dict[int, list[float]] = {}
    for event in stream:
        if event["event"] == "iteration":
            losses.setdefault(event["stage"], []).append(event["losses"]["total"])
    start = {s: sum(v[:4]) / 4 for s, v in losses.items()}
    end = {s: sum(v[-4:]) / 4 for s, v in losses.items()}
    assert sorted(losses) == [1, 2, 3] and all(len(v) == 25 for v in losses.values())
    assert end[1] < 0.8 * start[1], (start, end)  # reconstruction + contrastive
    assert end[2] < start[2] - 0.05, (start, end)  # fidelity + light - SSIM + NCC + smoothness (negative)
    assert end[3] < 0.95 * start[3], (start, end)  # weighted CE + Dice
    validations = [e for e in stream if e["event"] == "validation" and e["stage"] == 3]
    assert {"dice_et", "dice_tc", "dice_wt", "loss"} <= set(validations[-1]["metrics"])
    # Checkpoints: one per stage, complete, loadable with weights_only=True.
    for stage in (1, 2, 3):
        state = load_checkpoint(run_dir / f"stage{stage}.pt")
        assert state["progress"]["finished"] and state["stage"] == stage and state["progress"]["epoch"] == 5
        assert set(state["split"]) == {"train", "valid"} and state["version"]
        assert {"model", "optimizers", "schedulers", "rng", "config", "training", "progress"} <= set(state)
        best = load_checkpoint(run_dir / f"stage{stage}_best.pt")
        assert best["kind"] == "weights" and json.loads(best["config"])["name"] == "compact"
    assert not list(run_dir.glob(".*.tmp"))


def _stage1_options(**changes) -> TrainingOptions:
    return TrainingOptions(stages=(1,), epochs=4, lr=1e-3, **SMALL_OPTIONS).replace(**changes)


def test_resume_gives_identical_weights(tiny_data, tmp_path):
    config = PRESETS["compact"]
    assert train(str(tiny_data), tmp_path / "straight", config, _stage1_options()) == "completed"
    assert train(str(tiny_data), tmp_path / "split", config, _stage1_options(stop_after_epochs=2)) == "stopped"
    assert load_checkpoint(tmp_path / "split" / "stage1.pt")["progress"]["epoch"] == 2
    assert train(str(tiny_data), tmp_path / "split", config, _stage1_options(), resume=True) == "completed"
    straight = load_checkpoint(tmp_path / "straight" / "stage1.pt")
    resumed = load_checkpoint(tmp_path / "split" / "stage1.pt")
    assert straight["progress"] == resumed["progress"] and resumed["progress"]["step"] == 20  # 5 training cases x 4 epochs
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_killed_run_resumes_from_its_last_checkpoint(tiny_data, tmp_path):
    run_dir, events = tmp_path / "run", tmp_path / "events.jsonl"
    args = ["--data", str(tiny_data), "--out", str(run_dir), "--stage", "1", "--epochs", "3", "--events", str(events), *SMALL]
    process = subprocess.Popen([sys.executable, "-m", "nslfcore.train", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # wait until epoch 2 is under way (epoch 1's checkpoint exists)
            lines = events.read_text().splitlines()[:-1] if events.exists() else []  # skip a half-written line
            if any('"epoch": 2' in line and '"iteration"' in line for line in lines):
                break
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    state = load_checkpoint(run_dir / "stage1.pt")  # intact after the kill
    assert state["progress"]["epoch"] == 1 and not state["progress"]["finished"]
    resumed = subprocess.run([sys.executable, "-m", "nslfcore.train", *args, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = load_checkpoint(run_dir / "stage1.pt")
    assert final["progress"]["finished"] and final["progress"]["epoch"] == 3
    assert not list(run_dir.glob(".*.tmp"))


def test_graceful_stop_file_writes_a_checkpoint_mid_epoch(tiny_data, tmp_path, monkeypatch):
    from nslfcore.training import trainer as trainer_module

    run_dir = tmp_path / "run"
    first_step = trainer_module.Trainer.train_step

    def step_then_stop(self, run, batch):  # the user presses Stop while the first step runs
        terms = first_step(self, run, batch)
        (self.run_dir / "STOP").touch()
        return terms

    monkeypatch.setattr(trainer_module.Trainer, "train_step", step_then_stop)
    assert train(str(tiny_data), run_dir, PRESETS["compact"], _stage1_options()) == "stopped"
    state = load_checkpoint(run_dir / "stage1.pt")
    progress = state["progress"]
    assert progress["epoch"] == 0 and progress["batch_in_epoch"] == 1 and progress["step"] == 1


def test_event_schema_refuses_drift():
    good = {"schema": 1, "event": "early_stop", "time": 1.0, "stage": 2, "epoch": 5, "best_epoch": 3, "patience": 2}
    validate_event(good)
    for bad in (
        good | {"schema": 2},
        good | {"event": "unknown"},
        {k: v for k, v in good.items() if k != "best_epoch"},
        good | {"stage": "2"},
        good | {"time": None},
    ):
        with pytest.raises(EventSchemaError):
            validate_event(bad)


@pytest.mark.parametrize("problem", ["missing-dir", "empty-dir", "missing-modality", "stage3-without-stage2"])
def test_bad_arguments_fail_fast_and_write_nothing(problem, tiny_data, tmp_path, capsys):
    data = tiny_data
    stage = "all"
    if problem == "missing-dir":
        data = tmp_path / "nowhere"
    elif problem == "empty-dir":
        data = tmp_path / "empty"
        data.mkdir()
    elif problem == "missing-modality":
        data = tmp_path / "broken"
        write_phantom_dataset(data, 2, seed=1, tiny=True)
        next(data.glob("*/*_t1ce.nii.gz")).unlink()
    else:
        stage = "3"
    out = tmp_path / "run"
    code = nslf_main(["train", "--data", str(data), "--out", str(out), "--stage", stage, *SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("nslf train: error:")
    expected = {"missing-dir": "no such folder", "empty-dir": "no cases", "missing-modality": "t1ce",
                "stage3-without-stage2": "stage-2 checkpoint"}[problem]  # fmt: skip
    assert expected in err[0]
    assert not out.exists()


def test_distributed_data_parallel_two_gloo_processes_agree(tiny_data, tmp_path):
    events = tmp_path / "events.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         "-m", "nslfcore.train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--stage", "1",
         "--epochs", "2", "--device", "cpu", "--events", str(events), *SMALL],
        capture_output=True, text=True, env=env, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stream = _events(events)
    start = next(e for e in stream if e["event"] == "run_start")
    assert start["world_size"] == 2
    end = next(e for e in stream if e["event"] == "stage_end")
    assert len(end["replica_digests"]) == 2 and len(set(end["replica_digests"])) == 1
    # Each rank ran half of the 5 training cases per epoch (rank 0's share is logged).
    assert max(e["step"] for e in stream if e["event"] == "iteration") == 2 * 3


def test_loss_weights_are_configurable_per_term(tiny_data, tmp_path):
    from nslfcore.models import NSLF
    from nslfcore.training.stages import StageStep

    options = TrainingOptions(loss_weights=(("stage2.ssim", 0.0), ("stage2.ncc", 2.5)))
    step = StageStep(NSLF(PRESETS["compact"]), 2, options)
    terms = step(torch.rand(1, 4, 32, 32, 32), torch.zeros(1, 32, 32, 32, dtype=torch.long))
    assert "ssim" not in terms and step.loss.weights.ncc == 2.5
    expected = sum(getattr(step.loss.weights, k) * v for k, v in terms.items() if k != "total")
    torch.testing.assert_close(terms["total"], expected)
    code = nslf_main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--loss-weight", "stage2.bogus=1"])
    assert code == 1 and not (tmp_path / "r").exists()


def test_stage3_dice_can_average_per_class(tmp_path):
    """--dice-average class gives ET its own Dice term; older run options (without it) stay pooled."""
    import argparse
    import json

    from nslfcore.commands.train import add_arguments, options_from_args
    from nslfcore.models import NSLF
    from nslfcore.training.stages import StageStep

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = options_from_args(parser.parse_args(["--data", "d", "--out", "o", "--dice-average", "class"]))
    assert TrainingOptions.from_json(options.to_json()).dice_average == "class"
    old = json.loads(TrainingOptions().to_json())
    del old["dice_average"]
    assert TrainingOptions.from_json(json.dumps(old)).dice_average == "pooled"
    with pytest.raises(ValueError, match="dice_average"):
        TrainingOptions(dice_average="mean")
    # A prediction that gets edema right and misses ET: per class, ET's miss costs a third of the loss.
    labels = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    labels[0, 2:14, 2:14, 2:14] = 2
    labels[0, 7:9, 7:9, 7:9] = 3
    # Logit gap 50: the probabilities of absent classes vanish next to the per-class smoothing 1e-5.
    logits = torch.nn.functional.one_hot(torch.where(labels == 3, 2, labels), 4).movedim(-1, 1).float() * 50
    image = torch.rand(1, 4, 16, 16, 16)
    losses = {}
    for average in ("pooled", "class"):
        step = StageStep(NSLF(PRESETS["compact"]), 3, TrainingOptions(dice_average=average))
        assert step.loss.dice.average == average
        losses[average] = float(step.loss.dice(logits, labels))
    assert losses["pooled"] == pytest.approx(8 / 1728, abs=1e-3)  # ET is 8 of 1728 tumour voxels
    # Per class: NCR absent and not predicted (loss 0), edema 1 - 2*1720/(1728+1720), ET missed (loss 1).
    assert losses["class"] == pytest.approx((0 + (1 - 2 * 1720 / 3448) + 1) / 3, abs=1e-3)


def test_init_fine_tunes_from_a_model_and_checks_its_configuration(tiny_data, tmp_path, capsys):
    from nslfcore.model_store import save_model
    from nslfcore.models import NSLF
    from nslfcore.training.checkpoint import atomic_torch_save, new_checkpoint

    torch.manual_seed(5)
    start = NSLF(PRESETS["compact"])
    init = save_model(start, tmp_path / "start.pt", stage=3)
    base = ["train", "--data", str(tiny_data), "--stage", "3", "--epochs", "1", *SMALL]
    assert nslf_main(base + ["--out", str(tmp_path / "no-init")]) == 1
    assert "--init" in capsys.readouterr().err and not (tmp_path / "no-init").exists()
    paper = atomic_torch_save(new_checkpoint(kind="weights", config=PRESETS["paper"].to_json(), model={}), tmp_path / "p.pt")
    assert nslf_main(base + ["--out", str(tmp_path / "wrong"), "--init", str(paper)]) == 1
    assert "another network configuration" in capsys.readouterr().err
    assert nslf_main(base + ["--out", str(tmp_path / "run"), "--init", str(init)]) == 0
    tuned = load_checkpoint(tmp_path / "run" / "stage3_best.pt")["model"]
    initial = start.state_dict()
    frozen = [k for k in initial if k.startswith("gmn.")]  # stage 3 does not train the GMN: kept from --init
    assert frozen and all(torch.equal(tuned[k], initial[k]) for k in frozen)
    assert not torch.equal(tuned["fsd.classifier.weight"], initial["fsd.classifier.weight"])  # and it trained
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == str(init)
    assert load_checkpoint(tmp_path / "run" / "stage3_best.pt")["trained_stages"] == [1, 2, 3]


def test_a_stage_2_fine_tune_of_a_segmenting_model_says_its_segmentation_needs_stage_3(tiny_data, tmp_path):
    """Stages are nested: stage 2 alone from a stage-3 model changes the features its segmenter was trained on
    (the shipped model lost half its Dice so), so the file drops stage 3 and loads with a warning naming the
    command; stage 3 after it restores ``trained_stages`` [1, 2, 3]."""
    from nslfcore.model_store import load_model, save_model
    from nslfcore.models import NSLF

    torch.manual_seed(6)
    init = save_model(NSLF(PRESETS["compact"]), tmp_path / "start.pt", stage=3)
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--epochs", "1", *SMALL, "--init", str(init)]
    with pytest.warns(UserWarning, match="needs stage 3 again before segmenting"):  # said before training
        assert nslf_main([*args, "--stage", "2", "--out", str(run)]) == 0
    data = load_checkpoint(run / "stage2_best.pt")
    assert data["stage"] == 2 and data["trained_stages"] == [1, 2]
    with pytest.warns(UserWarning, match=r"untrained for it: train stage 3 \(nslf train --stage 3 --init "):
        load_model(run / "stage2_best.pt")
    assert nslf_main([*args[:-1], str(run / "stage2_best.pt"), "--stage", "3", "--out", str(tmp_path / "run3")]) == 0
    assert load_checkpoint(tmp_path / "run3" / "stage3_best.pt")["trained_stages"] == [1, 2, 3]


def test_stop_after_epochs_from_the_command_line(tiny_data, tmp_path):
    run_dir, events = tmp_path / "run", tmp_path / "events.jsonl"
    args = ["train", "--data", str(tiny_data), "--out", str(run_dir), "--stage", "1", "--epochs", "3",
            "--stop-after-epochs", "1", "--events", str(events), *SMALL]  # fmt: skip
    assert nslf_main(args) == 3  # stopped, not completed
    assert _events(events)[-1]["status"] == "stopped"
    assert load_checkpoint(run_dir / "stage1.pt")["progress"]["epoch"] == 1
    assert nslf_main(args[:-len(SMALL) - 4] + ["--events", str(events), *SMALL, "--resume"]) == 0
    assert load_checkpoint(run_dir / "stage1.pt")["progress"]["epoch"] == 3


def test_time_limit_ends_each_stage_early_and_goes_on(tiny_data, tmp_path):
    """--time-limit: past it the epoch in progress ends, is validated, and the next stage starts."""
    run_dir, events = tmp_path / "run", tmp_path / "events.jsonl"
    args = ["train", "--data", str(tiny_data), "--out", str(run_dir), "--stage", "all", "--epochs", "50",
            "--time-limit", "0.001", "--lr", "1e-3", "--events", str(events), *SMALL]  # fmt: skip
    assert nslf_main(args) == 0  # completed: every stage ran, each cut short
    stream = _events(events)
    limits = [e for e in stream if e["event"] == "time_limit"]
    assert [e["stage"] for e in limits] == [1, 2, 3] and all(e["limit_s"] == 0.001 for e in limits)
    for stage in (1, 2, 3):
        steps = [e for e in stream if e["event"] == "iteration" and e["stage"] == stage]
        assert len(steps) == 1  # the step in flight when the limit passed; no second one
        state = load_checkpoint(run_dir / f"stage{stage}.pt")
        assert state["progress"]["finished"] and state["progress"]["epoch"] == 1
        assert load_checkpoint(run_dir / f"stage{stage}_best.pt")["epoch"] == 1
    with pytest.raises(ValueError, match="time_limit_s"):
        TrainingOptions(time_limit_s=0)


def test_a_stale_stop_file_does_not_stop_the_resumed_run(tiny_data, tmp_path):
    """Stop (STOP file), then --resume: the old STOP is cleared at the start, the run goes to the end."""
    from nslfcore.training.trainer import STOP_FILE

    run_dir = tmp_path / "run"
    options = _stage1_options(epochs=2)
    run_dir.mkdir()
    (run_dir / STOP_FILE).write_text("")  # as the Slicer panel's Stop leaves it
    assert train(str(tiny_data), run_dir, PRESETS["compact"], options) == "completed"
    assert not (run_dir / STOP_FILE).exists()
    assert load_checkpoint(run_dir / "stage1.pt")["progress"]["epoch"] == 2
