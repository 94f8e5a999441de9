"""Training recipes: the shipped file, the format's checks, and ``nslf train --recipe`` (data, chained stages, resume)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from nslfcore.cli import main as nslf_main
from nslfcore.config import PRESETS
from nslfcore.model_store import list_models
from nslfcore.training.checkpoint import load_checkpoint
from nslfcore.training.options import TrainingOptions
from nslfcore.training.recipe import RECIPES_DIR, DataEntry, Recipe, RecipeError, expand_names, list_recipes, load_recipe

#: A recipe of 4 tiny phantoms (3 of seed 3, 1 of seed 4 at index 10) and all three stages, cut to one step each.
TINY_STEPS = {"epochs": 1, "max_steps_per_epoch": 1, "fusion_crop": [16, 32, 32], "segmentation_crop": [16, 32, 32],
              "lr": 1e-3}  # fmt: skip
TINY = {
    "name": "tiny",
    "description": "three stages on tiny phantoms, one step each (tests)",
    "config": "compact",
    "init": None,
    "data": [{"generator": "phantom", "n": 3, "seed": 3, "start": 0, "tiny": True},
             {"generator": "phantom", "n": 1, "seed": 4, "start": 10, "tiny": True}],
    "split": {"train": ["BraTS2021_00000..BraTS2021_00001", "BraTS2021_00010"], "valid": ["BraTS2021_00002"]},
    "stages": [{"stage": n, "options": dict(TINY_STEPS)} for n in (1, 2, 3)],
}  # fmt: skip
CASES = ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00010"]
BANK_ENTRY = {"generator": "bank", "n": 2, "seed": 5, "start": 0}
#: TINY on a label bank of 2 maps: crops synthesised on the fly, the bank's last 2 maps validating.
TINY_BANK = {**TINY, "name": "tiny-bank", "data": [BANK_ENTRY], "split": None}


def _recipe_file(folder: Path, recipe: dict | None = None, name: str = "tiny.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(recipe or TINY))
    return path


def _changed(change) -> dict:
    recipe = copy.deepcopy(TINY)
    change(recipe)
    return recipe


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------ the shipped recipes
def test_the_shipped_recipes_load_and_every_stage_validates():
    assert "nslf-synth-fast-v5" in list_recipes()
    model_ids = {info.id for info in list_models()}
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name == (RECIPES_DIR / f"{name}.json").stem
        assert recipe.init is None or recipe.init in model_ids
        for stage in recipe.stages:
            assert stage.options.stages == (stage.stage,)
            assert TrainingOptions.from_json(stage.options.to_json()) == stage.options
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_the_v5_recipe_is_the_command_that_trains_v5():
    recipe = load_recipe("nslf-synth-fast-v5")
    assert (recipe.config, recipe.init) == (None, "nslf-phantom-fast-v4")
    assert [(e.generator, e.n, e.seed, e.start, e.tiny) for e in recipe.data] == [("synth", 40, 1, 0, False),
                                                                               ("phantom", 10, 1000, 0, False)]
    assert recipe.split["train"] == tuple([f"Synth-{i:05d}" for i in range(36)] + [f"BraTS2021_{i:05d}" for i in range(9)])
    assert recipe.split["valid"] == ("Synth-00036", "Synth-00037", "Synth-00038", "Synth-00039", "BraTS2021_00009")
    (stage,) = recipe.stages
    assert stage.stage == 3 and stage.options == TrainingOptions(
        stages=(3,), epochs=8, time_limit_s=5400, lr=1e-4, fine_tune_lr=2e-5, batch_size=2, samples_per_case=2,
        segmentation_crop=(64, 128, 128), tumour_fraction=0.7, et_fraction=0.3, dice_average="class",
        augmentation="strong", sequence_dropout=0.2, case_validation_every=1, case_validation_max_cases=5,
        num_workers=1, seed=31,
    )  # fmt: skip


def test_the_v6_recipe_trains_the_fast_configuration_from_scratch_on_a_label_bank():
    recipe = load_recipe("nslf-synth-fast-v6")
    assert (recipe.config, recipe.init, recipe.split) == ("fast", None, None)
    assert recipe.data == (DataEntry("bank", 160, 11, 0),) and recipe.bank == recipe.data[0]
    assert [s.stage for s in recipe.stages] == [1, 2, 3]
    assert [s.options.time_limit_s for s in recipe.stages] == [50, 75, 270]  # with the bank, one 10-minute device call
    assert {(s.options.num_workers, s.options.amp, s.options.case_validation_max_cases) for s in recipe.stages} == {(0, True, 6)}
    assert [(s.options.batch_size, s.options.fusion_crop if s.stage < 3 else s.options.segmentation_crop)
            for s in recipe.stages] == [(4, (64, 96, 96)), (4, (64, 96, 96)), (2, (96, 160, 160))]  # fmt: skip
    three = recipe.stages[2].options
    assert (three.sequence_dropout, three.dice_average, three.tumour_fraction, three.et_fraction,
            three.case_validation_every, three.loss_weights) == (
        0.25, "class", 0.8, 0.35, 2, (("stage3.fusion", 0.2), ("stage2.contrast", 1.0)))  # fmt: skip


# ------------------------------------------------------------------------------ the format
def test_ranges_expand_to_every_name_between_their_ends():
    assert expand_names(["Synth-00008..Synth-00011", "BraTS2021_00009"], "split") == [
        "Synth-00008", "Synth-00009", "Synth-00010", "Synth-00011", "BraTS2021_00009"]  # fmt: skip
    assert expand_names(["BraTS2021_00099..BraTS2021_00101"], "split") == ["BraTS2021_00099", "BraTS2021_00100",
                                                                           "BraTS2021_00101"]  # fmt: skip
    assert expand_names(["case7..case7"], "split") == ["case7"]


@pytest.mark.parametrize("text", ["Synth-00003..Synth-00001", "Synth-00000..BraTS2021_00003", "Synth-0..Synth-00003",
                                  "Synth..Synth-00003", "Synth-00000..", "..Synth-00003"])  # fmt: skip
def test_bad_ranges_are_refused(text):
    with pytest.raises(RecipeError, match="range") as caught:
        expand_names([text], "split train")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(epochs=3), r"unknown keys \['epochs'\]"),
        (lambda r: r.pop("init"), r"missing keys \['init'\]"),
        (lambda r: r["data"][0].update(count=3), r"data entry 1: unknown keys \['count'\]"),
        (lambda r: r["stages"][0]["options"].update(epoch=2), r"stage 1 options: unknown keys \['epoch'\]"),
        (lambda r: r["stages"][0]["options"].update(stages=[1, 2]), r"unknown keys \['stages'\]"),
        (lambda r: r["stages"][1]["options"].update(lr=-1), "stage 2 options: lr must be a positive number"),
        (lambda r: r["stages"][2]["options"].update(segmentation_crop=[30, 48, 48]), "multiples of 16"),
        (lambda r: r["split"]["valid"].append("BraTS2021_00003"), "no data entry generates"),
        (lambda r: r["split"]["valid"].append("BraTS2021_00001"), "in both train and valid"),
        (lambda r: r["split"].update(valid=[]), "split valid is empty"),
        (lambda r: r.update(stages=[r["stages"][2], r["stages"][1]]), "increasing order"),
        (lambda r: r.update(stages=r["stages"][2:]), "first stage 3 needs"),
        (lambda r: r.update(config=None), "name a config or an init"),
        (lambda r: r.update(config="huge"), "config 'huge' must be one of"),
        (lambda r: r.update(name="runs/tiny"), "name 'runs/tiny' must be"),
        (lambda r: r["data"][0].update(generator="synth"), "true only for the phantom generator"),
        (lambda r: r["data"][0].update(generator="brats"), "generator 'brats' must be"),
        (lambda r: r["data"][0].update(n=0), "n must be an integer >= 1"),
        (lambda r: r["data"][1].update(start=2), "data entries overlap on BraTS2021_00002"),
        (lambda r: r["data"].append(dict(BANK_ENTRY)), "a bank entry must be the only data entry"),
        (lambda r: r.update(data=[dict(BANK_ENTRY)]), "split must be null for a bank"),
        (lambda r: r.update(split=None), "split must be an object"),
    ],
)
def test_bad_recipes_are_refused_in_one_sentence(change, message):
    with pytest.raises(RecipeError, match=message) as caught:
        Recipe.from_dict(_changed(change), source="Recipe tiny.json")
    text = str(caught.value)
    assert text.startswith("Recipe tiny.json") and "\n" not in text and text.endswith(".")


def test_load_recipe_names_the_shipped_recipes_and_the_file(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe; the engine ships nslf-synth-fast-v5"):
        load_recipe("nslf-synth-fast-v9")
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text('{"name": ')
    with pytest.raises(RecipeError, match="broken.json cannot be read as JSON"):
        load_recipe(tmp_path / "broken.json")
    assert load_recipe(_recipe_file(tmp_path)) == Recipe.from_dict(TINY)


# ------------------------------------------------------------------------------ nslf train --recipe
@pytest.fixture
def fake_train(monkeypatch):
    """``training.run.train`` replaced by one that records its call, writes ``stage<N>_best.pt`` and returns
    ``"completed"`` (or ``"stopped"`` for the stages in ``calls.stop``); the calls, in order."""
    import nslfcore.training.run as training_run

    class Calls(list):
        stop: set[int] = set()

    calls = Calls()

    def train(data, run_dir, config, options, device="auto", events=None, resume=False, init=None, cache_dir=None):
        (stage,) = options.stages
        calls.append({"data": data, "run_dir": Path(run_dir), "config": config, "stage": stage, "init": init,
                      "resume": resume, "device": device, "cache_dir": cache_dir})  # fmt: skip
        if stage in calls.stop:
            calls.stop.discard(stage)
            return "stopped"
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / f"stage{stage}_best.pt").write_text(f"weights of stage {stage}")
        return "completed"

    monkeypatch.setattr(training_run, "train", train)
    return calls


@pytest.fixture
def counted_generation(monkeypatch):
    """``write_phantom_dataset`` still writes, and counts its calls."""
    import nslfcore.data.phantom as phantom

    calls: list[int] = []
    original = phantom.write_phantom_dataset

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(phantom, "write_phantom_dataset", counted)
    return calls


def test_recipe_generates_its_data_once_and_chains_its_stages(tmp_path, fake_train, counted_generation):
    recipe, data, run = _recipe_file(tmp_path), tmp_path / "data", tmp_path / "run"
    args = ["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run), "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert nslf_main(args) == 0
    assert len(counted_generation) == 2  # one call per data entry
    assert sorted(p.name for p in data.iterdir()) == [*CASES, "train.txt", "valid.txt"]
    assert (data / "train.txt").read_text().split() == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00010"]
    assert (data / "valid.txt").read_text().split() == ["BraTS2021_00002"]
    assert not list(tmp_path.glob(".data*"))  # the hidden generation folder is gone
    assert [c["run_dir"] for c in fake_train] == [run / "stage1", run / "stage2", run / "stage3"]
    assert [c["init"] for c in fake_train] == [None, run / "stage1" / "stage1_best.pt", run / "stage2" / "stage2_best.pt"]
    assert [c["stage"] for c in fake_train] == [1, 2, 3]
    assert all(c["data"] == str(data) and c["config"] == PRESETS["compact"] and c["device"] == "cpu"
               and c["cache_dir"] == str(tmp_path / "cache") and not c["resume"] for c in fake_train)  # fmt: skip
    assert (run / "tiny.pt").read_text() == "weights of stage 3"
    state = json.loads((run / "recipe.json").read_text())
    assert state["finished"] == [1, 2, 3] and Recipe.from_dict(state["recipe"]) == load_recipe(recipe)

    # A second run on the same folder uses the cases there.
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    assert nslf_main([*args[:-4], "--out", str(tmp_path / "run2")]) == 0
    assert len(counted_generation) == 2 and {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before
    assert (tmp_path / "run2" / "tiny.pt").is_file()


def test_a_data_folder_with_some_of_the_cases_is_refused_and_nothing_is_written(tmp_path, fake_train, capsys):
    recipe, data, run = _recipe_file(tmp_path), tmp_path / "data", tmp_path / "run"
    (data / "BraTS2021_00001").mkdir(parents=True)
    assert nslf_main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run)]) == 1
    error = capsys.readouterr().err.strip()
    assert "holds 1 of the 4 cases of recipe tiny (BraTS2021_00000 is missing)" in error and "\n" not in error
    assert _files(data) == ["BraTS2021_00001"] and not run.exists() and not fake_train
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "tiny.json"]


def test_split_lists_that_disagree_with_the_recipe_are_refused(tmp_path, fake_train, capsys):
    recipe, data, run = _recipe_file(tmp_path), tmp_path / "data", tmp_path / "run"
    data.mkdir()
    (data / "train.txt").write_text("BraTS2021_00000\n")
    assert nslf_main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run)]) == 1
    assert "split lists differ from recipe tiny's" in capsys.readouterr().err
    assert _files(data) == ["train.txt"] and not run.exists()


@pytest.mark.parametrize("extra", [["--epochs", "3"], ["--stage", "3"], ["--lr", "1e-3", "--no-gmn"],
                                   ["--init", "model.pt"], ["--fusion-crop", "32", "32", "32"]])  # fmt: skip
def test_recipe_refuses_the_training_options_it_fixes(tmp_path, fake_train, capsys, extra):
    recipe, data, run = _recipe_file(tmp_path), tmp_path / "data", tmp_path / "run"
    assert nslf_main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run), *extra]) == 1
    error = capsys.readouterr().err.strip()
    flags = [item for item in extra if item.startswith("--")]
    assert f"sets every training option; leave out {', '.join(flags)}" in error and "\n" not in error
    assert not data.exists() and not run.exists() and not fake_train


def test_a_resumed_recipe_skips_finished_stages_and_continues_the_stopped_one(tmp_path, fake_train, capsys):
    recipe, data, run = _recipe_file(tmp_path), tmp_path / "data", tmp_path / "run"
    args = ["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run)]
    fake_train.stop = {2}
    assert nslf_main(args) == 3
    assert [c["stage"] for c in fake_train] == [1, 2] and not (run / "tiny.pt").exists()
    assert json.loads((run / "recipe.json").read_text())["finished"] == [1]
    assert nslf_main(args) == 1  # no --resume: refused
    assert "already holds a recipe run" in capsys.readouterr().err
    other = _recipe_file(tmp_path, _changed(lambda r: r["stages"][2]["options"].update(epochs=2)), "other.json")
    assert nslf_main(["train", "--recipe", str(other), *args[3:], "--resume"]) == 1  # another version of the recipe
    assert "another version of recipe tiny" in capsys.readouterr().err
    fake_train.clear()
    assert nslf_main([*args, "--resume"]) == 0
    assert [(c["stage"], c["resume"], c["init"]) for c in fake_train] == [
        (2, True, run / "stage1" / "stage1_best.pt"), (3, True, run / "stage2" / "stage2_best.pt")]  # fmt: skip
    assert json.loads((run / "recipe.json").read_text())["finished"] == [1, 2, 3]
    assert (run / "tiny.pt").read_text() == "weights of stage 3"


def test_the_init_model_comes_from_the_model_store_with_its_configuration(tmp_path, fake_train, capsys):
    from nslfcore.model_store import resolve_model

    recipe = _changed(lambda r: r.update(config=None, init="nslf-phantom-fast-v4", stages=r["stages"][2:]))
    path, data, run = _recipe_file(tmp_path, recipe), tmp_path / "data", tmp_path / "run"
    assert nslf_main(["train", "--recipe", str(path), "--data", str(data), "--out", str(run)]) == 0
    ((call),) = fake_train
    assert call["init"] == resolve_model("nslf-phantom-fast-v4").path and call["config"] == PRESETS["fast"]
    assert call["run_dir"] == run / "stage3"

    clash = _recipe_file(tmp_path, {**recipe, "config": "compact"}, "clash.json")
    assert nslf_main(["train", "--recipe", str(clash), "--data", str(data), "--out", str(tmp_path / "run2")]) == 1
    assert "config compact is not the configuration of init model nslf-phantom-fast-v4" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()


def test_a_recipe_trains_tiny_phantoms_end_to_end(tmp_path):
    """The real trainer: generated cases, three chained stages of one step, the model file at the end."""
    from nslfcore.model_store import load_model

    recipe, data, run, events = _recipe_file(tmp_path), tmp_path / "data", tmp_path / "run", tmp_path / "events.jsonl"
    args = ["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run), "--device", "cpu",
            "--events", str(events)]  # fmt: skip
    assert nslf_main(args) == 0
    model, info = load_model(run / "tiny.pt")
    assert model.config == PRESETS["compact"] and info.stage == 3
    assert load_checkpoint(run / "tiny.pt")["trained_stages"] == [1, 2, 3]
    for stage in (1, 2, 3):
        state = load_checkpoint(run / f"stage{stage}" / f"stage{stage}.pt")
        assert state["progress"]["finished"] and state["split"] == {"train": ["BraTS2021_00000", "BraTS2021_00001",
                                                                             "BraTS2021_00010"],
                                                                   "valid": ["BraTS2021_00002"]}  # fmt: skip
    ends = [json.loads(line) for line in events.read_text().splitlines() if '"run_end"' in line]
    assert [e["status"] for e in ends] == ["completed"] * 3


@pytest.fixture
def fake_bank(monkeypatch):
    """``write_label_bank`` replaced by one that records its arguments and writes only ``bank.json``."""
    import nslfcore.synthesis.bank as bank

    calls: list[dict] = []

    def write(folder, n, seed=0, start=0, workers=1, progress=None):
        calls.append({"folder": Path(folder), "n": n, "seed": seed, "start": start, "workers": workers})
        Path(folder).mkdir(parents=True, exist_ok=True)
        maps = {str(i): {"tumour_type": "glioblastoma", "start": [0, 0, 0], "shape": [1, 1, 1]} for i in range(start, start + n)}
        (Path(folder) / bank.BANK_FILE).write_text(json.dumps({"format": 1, "seed": seed, "maps": maps}))

    monkeypatch.setattr(bank, "write_label_bank", write)
    return calls


def test_a_bank_recipe_draws_its_maps_once_per_run_and_trains_every_stage_on_the_fly(tmp_path, fake_train, fake_bank):
    import os

    recipe, data, run = _recipe_file(tmp_path, TINY_BANK), tmp_path / "data", tmp_path / "run"
    assert nslf_main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(run), "--device", "cpu"]) == 0
    assert fake_bank == [{"folder": data / "bank", "n": 2, "seed": 5, "start": 0, "workers": os.cpu_count()}]
    assert [(c["stage"], c["data"]) for c in fake_train] == [(n, f"synth:{data / 'bank'}") for n in (1, 2, 3)]
    assert _files(data) == ["bank", "bank/bank.json"] and (run / "tiny-bank.pt").is_file()
    assert json.loads((run / "recipe.json").read_text())["recipe"]["split"] is None


def test_a_bank_of_another_seed_or_with_other_maps_is_refused_before_anything_is_written(tmp_path, fake_train,
                                                                                           fake_bank, capsys):  # fmt: skip
    recipe, data = _recipe_file(tmp_path, TINY_BANK), tmp_path / "data"
    (data / "bank").mkdir(parents=True)
    for seed, maps in ((6, ["0", "1"]), (5, ["0", "1", "2"])):
        (data / "bank" / "bank.json").write_text(json.dumps({"format": 1, "seed": seed, "maps": dict.fromkeys(maps, {})}))
        assert nslf_main(["train", "--recipe", str(recipe), "--data", str(data), "--out", str(tmp_path / "run")]) == 1
        error = capsys.readouterr().err.strip()
        assert f"holds label maps of seed {seed} ({len(maps)} maps), not maps 0..1 of seed 5 of recipe tiny-bank" in error
        assert "\n" not in error and not fake_bank and not fake_train and not (tmp_path / "run").exists()
