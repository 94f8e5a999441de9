"""Running a recipe (``nslf train --recipe NAME --data DIR --out RUN``): its cases, then its stages in order.

The data folder ``DIR`` holds either none of the recipe's cases (they are generated there, each
entry by the engine's own writer, with ``train.txt`` / ``valid.txt``) or all of them (used as they
are); a folder with only some is refused, as are split lists that disagree with the recipe's.
Cases are generated into a hidden folder beside ``DIR`` and moved in when all are written, so an
interrupted generation leaves ``DIR`` without any of them and the next run starts again.
A recipe whose data is a label bank writes it into ``DIR/bank`` instead (one process per CPU
core; an interrupted bank keeps its complete maps and the next run draws the others), refuses a
bank there of another seed or with maps the recipe does not draw, and trains every stage on
``--data synth:DIR/bank``.

The run folder::

    RUN/recipe.json        the recipe (expanded) and the stages finished so far
    RUN/stage<N>/          one training run (training.run.train) per recipe stage
    RUN/<name>.pt          the last stage's best weights (stage<N>_best.pt), once every stage completed

Each stage starts from the previous stage's ``stage<N>_best.pt``, the first from the recipe's
``init`` model (resolved and checksum-verified through the model store). ``--resume`` skips the
finished stages and continues the one in progress. Everything is checked before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nslfcore.config import PRESETS, NSLFConfig
from nslfcore.data.brats import read_split_lists
from nslfcore.data.output import OutputLock, atomic_copy, atomic_write_text
from nslfcore.distributed import DistributedContext, device_for_rank
from nslfcore.synthesis.bank import BANK_FILE, BankEntry
from nslfcore.training import run as training_run
from nslfcore.training.recipe import DataEntry, Recipe, RecipeError

#: The run folder's record of the recipe and its finished stages.
STATE_NAME = "recipe.json"
#: The label bank's folder inside the data folder of a bank recipe.
BANK_FOLDER = "bank"

Progress = Callable[[str], None]


def run_recipe(recipe: Recipe, data_dir: str | Path, run_dir: str | Path, device: str = "auto", resume: bool = False,
               cache_dir: str | Path | None = None, events: str | Path | None = None,
               progress: Progress | None = None) -> str:  # fmt: skip
    """Generate (or check) the recipe's cases in ``data_dir`` and train its stages into ``run_dir``.

    Returns ``"completed"`` (``run_dir/<name>.pt`` written) or the status of the stage that did not
    complete (``"stopped"``: ``resume=True`` continues). Raises :class:`RecipeError` (or the
    trainer's :class:`~nslfcore.training.run.TrainingSetupError`) before writing anything when an
    argument cannot work.
    """
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    say = progress or (lambda message: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RecipeError("--recipe runs in one process; start it with nslf train, not torchrun.")
    if run_dir.exists() and not run_dir.is_dir():
        raise RecipeError(f"--out {run_dir} is a file; give a folder for the run.")
    finished = _finished_stages(recipe, run_dir, resume)
    try:
        device_for_rank(device, DistributedContext())
    except ValueError as error:
        raise RecipeError(f"--device {device}: {error}") from None
    init = _init_model(recipe)
    config = _config(recipe, init)
    if recipe.bank is not None:
        data = f"synth:{_check_bank(recipe, data_dir)}"
        _write_bank(recipe.bank, data_dir / BANK_FOLDER, say)
    else:
        data = str(data_dir)
        generate = _needs_generation(recipe, data_dir)
        write_lists = _check_split_lists(recipe, data_dir)
        if generate:
            _generate(recipe, data_dir, say)
        elif write_lists:
            _write_split_lists(recipe, data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(run_dir, "nslf train --recipe"):
        _write_state(recipe, data_dir, run_dir, finished)
        for stage in recipe.stages:
            stage_dir = run_dir / f"stage{stage.stage}"
            best = stage_dir / f"stage{stage.stage}_best.pt"
            if stage.stage in finished and best.is_file():
                say(f"stage {stage.stage}: finished earlier ({best})")
            else:
                say(f"stage {stage.stage}: training into {stage_dir}, starting from {init or 'random weights'}")
                status = training_run.train(data, stage_dir, config, stage.options, device, events, resume, init,
                                            cache_dir)  # fmt: skip
                if status != "completed":
                    return status
                finished.append(stage.stage)
                _write_state(recipe, data_dir, run_dir, finished)
            init = best
        assert init is not None  # a recipe has at least one stage
        atomic_copy(init, run_dir / f"{recipe.name}.pt")
    return "completed"


def _finished_stages(recipe: Recipe, run_dir: Path, resume: bool) -> list[int]:
    """The stages ``RUN/recipe.json`` lists as finished; a run of another recipe, or one without ``resume``, is refused."""
    state_file = run_dir / STATE_NAME
    if not state_file.is_file():
        if not resume and any(run_dir.glob("stage*/stage*.pt")):
            raise RecipeError(f"--out {run_dir} already holds checkpoints; use --resume to continue or another --out.")
        return []
    if not resume:
        raise RecipeError(f"--out {run_dir} already holds a recipe run ({state_file}); "
                          "use --resume to continue or another --out.")  # fmt: skip
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        same = Recipe.from_dict(state["recipe"], source=str(state_file)) == recipe
        finished = [int(stage) for stage in state["finished"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise RecipeError(f"{state_file} cannot be read; give another --out (or remove the folder) to start again.") from None
    if not same:
        raise RecipeError(f"--out {run_dir} was trained with another version of recipe {recipe.name}; "
                          "give another --out for this one.")  # fmt: skip
    return finished


def _init_model(recipe: Recipe) -> Path | None:
    """The file of the recipe's ``init`` model id, checksum-verified (:class:`~nslfcore.model_store.ModelError` if not)."""
    if recipe.init is None:
        return None
    from nslfcore.model_store import resolve_model, verify

    info = resolve_model(recipe.init)
    assert info.path is not None  # resolve_model returns an existing file
    if info.sha256 is not None:
        verify(info.path, info.sha256, info.size_bytes)
    return info.path


def _config(recipe: Recipe, init: Path | None) -> NSLFConfig:
    """The recipe's preset, or the init model's configuration (``config`` null); the two must agree when both are named."""
    if init is None:
        assert recipe.config is not None  # Recipe.from_dict refuses neither
        return PRESETS[recipe.config]
    from nslfcore.training.checkpoint import load_checkpoint

    try:
        stored = NSLFConfig.from_json(load_checkpoint(init)["config"])
    except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
        raise RecipeError(f"init model {recipe.init} ({init}): {error}") from None
    if recipe.config is not None and PRESETS[recipe.config] != stored:
        raise RecipeError(f"Recipe {recipe.name}: config {recipe.config} is not the configuration of init model "
                          f"{recipe.init}; set config to null (the init model's) or name another init.")  # fmt: skip
    return stored


def _needs_generation(recipe: Recipe, data_dir: Path) -> bool:
    """True when ``data_dir`` holds none of the recipe's cases, false when it holds all; refused when it holds some."""
    if data_dir.exists() and not data_dir.is_dir():
        raise RecipeError(f"--data {data_dir} is a file; give a folder for the recipe's cases.")
    names = recipe.case_names()
    present = [name for name in names if (data_dir / name).exists()]
    if present and len(present) < len(names):
        missing = [name for name in names if not (data_dir / name).exists()]
        raise RecipeError(f"--data {data_dir} holds {len(present)} of the {len(names)} cases of recipe {recipe.name} "
                          f"({missing[0]} is missing); give an empty or new folder, or one with all of them.")  # fmt: skip
    return not present


def _check_bank(recipe: Recipe, data_dir: Path) -> Path:
    """``data_dir/bank``; refused when it holds a bank of another seed or maps outside the recipe's range."""
    entry, folder = recipe.bank, data_dir / BANK_FOLDER
    assert entry is not None
    if data_dir.exists() and not data_dir.is_dir():
        raise RecipeError(f"--data {data_dir} is a file; give a folder for the recipe's label bank.")
    try:
        index = json.loads((folder / BANK_FILE).read_text(encoding="utf-8"))
        seed, maps = int(index["seed"]), [int(key) for key in index["maps"]]
    except FileNotFoundError:
        return folder
    except (OSError, ValueError, KeyError, TypeError):
        raise RecipeError(f"--data {data_dir}: {folder / BANK_FILE} cannot be read; remove {folder} to draw the bank "
                          "again.") from None  # fmt: skip
    extra = [i for i in maps if not entry.start <= i < entry.start + entry.n]
    if seed != entry.seed or extra:
        raise RecipeError(f"--data {data_dir}: {folder} holds label maps of seed {seed} ({len(maps)} maps), not maps "
                          f"{entry.start}..{entry.start + entry.n - 1} of seed {entry.seed} of recipe {recipe.name}; "
                          "give another folder.")  # fmt: skip
    return folder


def _write_bank(entry: DataEntry, folder: Path, say: Progress) -> None:
    """The recipe's label maps in ``folder``, drawn in one process per CPU core (complete ones kept)."""
    from nslfcore.synthesis.bank import write_label_bank

    done = [0]

    def counted(drawn: BankEntry) -> None:
        done[0] += 1
        say(f"drew label map {drawn.name} ({done[0]} new)")

    workers = os.cpu_count() or 1
    say(f"label bank: maps {entry.start}..{entry.start + entry.n - 1} of seed {entry.seed} in {folder}, {workers} processes")
    write_label_bank(folder, entry.n, entry.seed, entry.start, workers, counted)


def _check_split_lists(recipe: Recipe, data_dir: Path) -> bool:
    """True when the split lists are to be written; refused when ``data_dir`` has lists that disagree with the recipe."""
    assert recipe.split is not None  # a recipe of cases
    try:
        lists = read_split_lists(data_dir)
    except FileNotFoundError:
        return True
    if [tuple(lists.get(part, ())) for part in ("train", "valid")] != [recipe.split["train"], recipe.split["valid"]]:
        raise RecipeError(f"--data {data_dir}: its split lists differ from recipe {recipe.name}'s; remove train.txt and "
                          "valid.txt there (the recipe writes them) or give another folder.")  # fmt: skip
    return False


def _write_split_lists(recipe: Recipe, folder: Path) -> None:
    assert recipe.split is not None  # a recipe of cases
    for part in ("train", "valid"):
        atomic_write_text(folder / f"{part}.txt", "".join(f"{name}\n" for name in recipe.split[part]))


def _generate(recipe: Recipe, data_dir: Path, say: Progress) -> None:
    """Write every case and the split lists into a hidden folder beside ``data_dir``, then move them in."""
    staging = data_dir.parent / f".{data_dir.name}.nslf-recipe-tmp"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted generation left
    staging.mkdir(parents=True)
    total, done = len(recipe.case_names()), [0]

    def counted(index: int, folder: Path) -> None:
        done[0] += 1
        say(f"generated {folder.name} ({done[0]}/{total})")

    for entry in recipe.data:
        _write_entry(entry, staging, counted)
    _write_split_lists(recipe, staging)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in recipe.case_names():
        (staging / name).rename(data_dir / name)
    for part in ("train", "valid"):
        (staging / f"{part}.txt").replace(data_dir / f"{part}.txt")
    shutil.rmtree(staging)


def _write_entry(entry: DataEntry, folder: Path, progress: Callable[[int, Path], Any]) -> None:
    """One data entry's cases with the engine's writer (synthesis on the CPU, whatever device trains)."""
    if entry.generator == "synth":
        from nslfcore.synthesis.generator import write_synthetic_dataset

        write_synthetic_dataset(folder, entry.n, entry.seed, entry.start, device="cpu", progress=progress)
    else:
        from nslfcore.data.phantom import write_phantom_dataset

        write_phantom_dataset(folder, entry.n, seed=entry.seed, tiny=entry.tiny, start=entry.start, progress=progress)


def _write_state(recipe: Recipe, data_dir: Path, run_dir: Path, finished: list[int]) -> None:
    state = {"recipe": recipe.to_dict(), "data": str(data_dir), "finished": sorted(set(finished))}
    atomic_write_text(run_dir / STATE_NAME, json.dumps(state, indent=2) + "\n")
