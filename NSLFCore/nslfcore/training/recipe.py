"""Training recipes: the one versioned file that says how a shipped model was made (``nslf train --recipe NAME``).

A recipe is JSON, one file per recipe in ``nslfcore/recipes/<name>.json`` (or any file given by
path), with exactly these keys (unknown keys are refused, as :meth:`NSLFConfig.from_dict` does)::

    {
      "name": "nslf-synth-fast-v5",         # letters, digits, ".", "_", "-": the run writes RUN/<name>.pt
      "description": "...",
      "config": null,                       # a preset of nslfcore.config.PRESETS, or null: the init model's
      "init": "nslf-phantom-fast-v4",       # a models.json model id (resolved by the model store), or null
      "data": [                             # the cases, each entry written by the engine's own generator
        {"generator": "synth", "n": 40, "seed": 1, "start": 0},           # nslf synth: Synth-00000 ..
        {"generator": "phantom", "n": 10, "seed": 1000, "start": 0}       # nslf phantom: BraTS2021_00000 ..
      ],
      "split": {"train": ["Synth-00000..Synth-00035", ...], "valid": [...]},
      "stages": [{"stage": 3, "options": {"epochs": 8, "lr": 1e-4, ...}}]
    }

``data`` entries: ``generator`` ``"synth"`` (:func:`~nslfcore.synthesis.generator.write_synthetic_dataset`,
on the CPU) or ``"phantom"`` (:func:`~nslfcore.data.phantom.write_phantom_dataset`), ``n`` cases
from index ``start`` (default 0) of ``seed``; ``"tiny": true`` (phantom only, default false) gives
48^3 procedural phantoms, for tests. No two entries may produce the same case name.

``generator`` ``"bank"`` (:func:`~nslfcore.synthesis.bank.write_label_bank`, one process per CPU
core) writes label maps ``start .. start + n - 1`` of ``seed`` into ``DIR/bank``, and every stage
trains on ``--data synth:DIR/bank``: crops synthesised on the fly (on the training device when it
is CUDA and ``num_workers`` is 0), validation on cases drawn once from the bank's last
``max(2, case_validation_max_cases)`` maps (:mod:`nslfcore.training.synthesis_data`). A bank entry
is then the recipe's only data entry (cases cannot train beside on-the-fly crops) and its
``split`` is ``null`` (the bank splits itself)::

    "data": [{"generator": "bank", "n": 160, "seed": 11, "start": 0}], "split": null

``split``: the case names of ``train`` and ``valid`` (written as ``train.txt`` / ``valid.txt``),
each a name or a compact range ``"FIRST..LAST"`` of names that differ only in their trailing
number, written with the same number of digits: ``"Synth-00000..Synth-00035"`` is the 36 names
``Synth-00000``, ``Synth-00001``, ..., ``Synth-00035`` (both ends included). Every name must be a
case of ``data``; the two lists must be disjoint and neither empty.

``stages``: run in the order given, stage numbers increasing (1, 2, 3; any may be left out; a
first stage 3 needs ``init``, whose fusion network it keeps). Each stage's ``options`` are
:class:`~nslfcore.training.options.TrainingOptions` field names and become
``TrainingOptions(stages=(stage,), **options)``, validated by it (lists become tuples).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nslfcore.config import PRESETS
from nslfcore.errors import NSLFError
from nslfcore.training.options import TrainingOptions

#: The recipes shipped with the engine: ``<name>.json``.
RECIPES_DIR: Path = Path(__file__).resolve().parents[1] / "recipes"

_RECIPE_KEYS = ("name", "description", "config", "init", "data", "split", "stages")
_ENTRY_KEYS = ("generator", "n", "seed", "start", "tiny")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_NUMBERED = re.compile(r"(.*?)(\d+)")


class RecipeError(NSLFError, ValueError):
    """A recipe that cannot be read or run (one sentence naming the recipe file or argument and what to fix)."""


@dataclass(frozen=True)
class DataEntry:
    """``n`` cases ``start .. start + n - 1`` of ``seed`` from one of the engine's generators (``tiny``: phantom only)."""

    generator: Literal["synth", "phantom", "bank"]
    n: int
    seed: int
    start: int = 0
    tiny: bool = False

    def case_names(self) -> list[str]:
        """The folder names the generator writes: ``Synth-XXXXX`` or ``BraTS2021_XXXXX`` (none for a bank)."""
        if self.generator == "bank":
            return []
        prefix = "Synth-" if self.generator == "synth" else "BraTS2021_"
        return [f"{prefix}{index:05d}" for index in range(self.start, self.start + self.n)]


@dataclass(frozen=True)
class RecipeStage:
    """One ``train()`` call of a recipe: ``stage`` (1, 2 or 3) with ``options.stages == (stage,)``."""

    stage: int
    options: TrainingOptions


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (see the module docstring); ``split`` holds the expanded case names (``None``: a bank)."""

    name: str
    description: str
    config: str | None
    init: str | None
    data: tuple[DataEntry, ...]
    split: dict[str, tuple[str, ...]] | None
    stages: tuple[RecipeStage, ...]

    def case_names(self) -> list[str]:
        """Every case the ``data`` entries generate, in order."""
        return [name for entry in self.data for name in entry.case_names()]

    @property
    def bank(self) -> DataEntry | None:
        """The label-bank entry when the recipe trains on the fly (then its only entry), else ``None``."""
        return self.data[0] if self.data[0].generator == "bank" else None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data (split ranges expanded; stage options that differ from their defaults)."""
        stages = []
        for stage in self.stages:
            defaults = TrainingOptions(stages=(stage.stage,))
            options = {f.name: _jsonable(getattr(stage.options, f.name)) for f in dataclasses.fields(TrainingOptions)
                       if getattr(stage.options, f.name) != getattr(defaults, f.name)}  # fmt: skip
            stages.append({"stage": stage.stage, "options": options})
        return {"name": self.name, "description": self.description, "config": self.config, "init": self.init,
                "data": [dataclasses.asdict(entry) for entry in self.data],
                "split": None if self.split is None else {part: list(names) for part, names in self.split.items()},
                "stages": stages}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, source: str = "the recipe") -> Recipe:
        """Read and check a recipe; ``source`` (its file) names it in every :class:`RecipeError`."""
        if not isinstance(data, dict):
            raise RecipeError(f"{source} must hold a JSON object with the keys {', '.join(_RECIPE_KEYS)}.")
        _check_keys(data, _RECIPE_KEYS, source, required=_RECIPE_KEYS)
        name, description, config, init = data["name"], data["description"], data["config"], data["init"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RecipeError(f"{source}: name {name!r} must be letters, digits, '.', '_' or '-' (it names RUN/<name>.pt).")
        if not isinstance(description, str):
            raise RecipeError(f"{source}: description must be a string.")
        if config is not None and config not in PRESETS:
            raise RecipeError(f"{source}: config {config!r} must be one of {', '.join(sorted(PRESETS))} or null.")
        if init is not None and not (isinstance(init, str) and init):
            raise RecipeError(f"{source}: init must be a model id of models.json or null, got {init!r}.")
        if config is None and init is None:
            raise RecipeError(f"{source}: config null means the init model's configuration, so name a config or an init.")
        entries = _data_entries(data["data"], source)
        split = None if entries[0].generator == "bank" and data["split"] is None else _split(data["split"], entries, source)
        stages = _stages(data["stages"], source)
        if stages[0].stage == 3 and init is None:
            raise RecipeError(f"{source}: a first stage 3 needs a trained fusion network; add stage 2 before it or an init.")
        return cls(name, description, config, init, entries, split, stages)


def list_recipes() -> list[str]:
    """The names of the recipes shipped with the engine, sorted."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.json"))


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a shipped recipe's name, or ``name_or_path`` itself when it is a ``.json`` path."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".json" or len(path.parts) > 1:
        if not path.is_file():
            raise RecipeError(f"--recipe {name_or_path}: no such recipe file; check the path.")
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.json"
    if not shipped.is_file():
        raise RecipeError(f"--recipe {name_or_path}: unknown recipe; the engine ships {', '.join(list_recipes()) or 'none'}, "
                          "or give a recipe .json file.")  # fmt: skip
    return shipped


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and validate a shipped recipe (by name) or a recipe file (by path); raises :class:`RecipeError`."""
    path = recipe_path(name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RecipeError(f"Recipe {path} cannot be read as JSON ({error}); fix the file.") from None
    return Recipe.from_dict(data, source=f"Recipe {path}")


def expand_names(items: Any, source: str) -> list[str]:
    """Case names with ranges ``"FIRST..LAST"`` expanded (see the module docstring); ``source`` names the list."""
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise RecipeError(f"{source} must be a list of case names or ranges such as \"Synth-00000..Synth-00035\".")
    names: list[str] = []
    for item in items:
        if ".." not in item:
            names.append(item)
            continue
        first, _, last = item.partition("..")
        a, b = _NUMBERED.fullmatch(first), _NUMBERED.fullmatch(last)
        if a is None or b is None or a[1] != b[1] or len(a[2]) != len(b[2]) or int(b[2]) < int(a[2]):
            raise RecipeError(f"{source}: range {item!r} must be FIRST..LAST, two names that differ only in a trailing "
                              "number of the same width, FIRST's not larger, e.g. \"Synth-00000..Synth-00035\".")  # fmt: skip
        names.extend(f"{a[1]}{index:0{len(a[2])}d}" for index in range(int(a[2]), int(b[2]) + 1))
    return names


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _tuples(value: Any) -> Any:
    """JSON lists -> tuples, nested (crops, loss-weight pairs)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _check_keys(data: dict, known: tuple[str, ...], source: str, required: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"{source}: unknown keys {unknown}; the known keys are {list(known)}.")
    missing = [key for key in required if key not in data]
    if missing:
        raise RecipeError(f"{source}: missing keys {missing}; a recipe names every one of {list(required)}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _data_entries(items: Any, source: str) -> tuple[DataEntry, ...]:
    if not isinstance(items, list) or not items:
        raise RecipeError(f"{source}: data must be a non-empty list of generator entries such as "
                          '{"generator": "synth", "n": 40, "seed": 1, "start": 0}.')  # fmt: skip
    entries = []
    for number, item in enumerate(items, 1):
        where = f"{source}: data entry {number}"
        if not isinstance(item, dict):
            raise RecipeError(f"{where} must be an object with the keys {list(_ENTRY_KEYS)}.")
        _check_keys(item, _ENTRY_KEYS, where, required=("generator", "n", "seed"))
        entry = DataEntry(**item)
        if entry.generator not in ("synth", "phantom", "bank"):
            raise RecipeError(f"{where}: generator {entry.generator!r} must be \"synth\", \"phantom\" or \"bank\".")
        if not (_is_int(entry.n) and entry.n >= 1 and _is_int(entry.seed) and entry.seed >= 0
                and _is_int(entry.start) and entry.start >= 0):  # fmt: skip
            raise RecipeError(f"{where}: n must be an integer >= 1, seed and start integers >= 0.")
        if not isinstance(entry.tiny, bool) or (entry.tiny and entry.generator != "phantom"):
            raise RecipeError(f"{where}: tiny must be true or false, and true only for the phantom generator.")
        entries.append(entry)
    if len(entries) > 1 and any(entry.generator == "bank" for entry in entries):
        raise RecipeError(f"{source}: a bank entry must be the only data entry (its crops are synthesised on the fly, "
                          "and cases cannot train beside them); give the bank alone or only case entries.")  # fmt: skip
    names = [name for entry in entries for name in entry.case_names()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise RecipeError(f"{source}: data entries overlap on {', '.join(twice[:3])}; give them other start indices.")
    return tuple(entries)


def _split(data: Any, entries: tuple[DataEntry, ...], source: str) -> dict[str, tuple[str, ...]]:
    if entries[0].generator == "bank":
        raise RecipeError(f"{source}: split must be null for a bank (it validates on its last maps).")
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: split must be an object with the lists train and valid.")
    _check_keys(data, ("train", "valid"), f"{source}: split", required=("train", "valid"))
    split = {part: expand_names(data[part], f"{source}: split {part}") for part in ("train", "valid")}
    generated = {name for entry in entries for name in entry.case_names()}
    for part, names in split.items():
        if not names:
            raise RecipeError(f"{source}: split {part} is empty; name at least one case.")
        unknown = [name for name in names if name not in generated]
        if unknown:
            raise RecipeError(f"{source}: split {part} names {unknown[0]}, which no data entry generates; "
                              "fix the split or the data.")  # fmt: skip
        if len(set(names)) != len(names):
            raise RecipeError(f"{source}: split {part} names a case twice; list each case once.")
    both = sorted(set(split["train"]) & set(split["valid"]))
    if both:
        raise RecipeError(f"{source}: {both[0]} is in both train and valid; put each case in one of them.")
    return {part: tuple(names) for part, names in split.items()}


def _stages(items: Any, source: str) -> tuple[RecipeStage, ...]:
    if not isinstance(items, list) or not items:
        raise RecipeError(f'{source}: stages must be a non-empty list such as [{{"stage": 3, "options": {{"epochs": 8}}}}].')
    stages = []
    for item in items:
        if not isinstance(item, dict):
            raise RecipeError(f"{source}: each stage must be an object with the keys stage and options.")
        _check_keys(item, ("stage", "options"), f"{source}: a stage", required=("stage", "options"))
        number, options = item["stage"], item["options"]
        where = f"{source}: stage {number}"
        if number not in (1, 2, 3) or not _is_int(number):
            raise RecipeError(f"{source}: stage {number!r} must be 1, 2 or 3.")
        if not isinstance(options, dict):
            raise RecipeError(f"{where}: options must be an object of TrainingOptions fields.")
        known = tuple(f.name for f in dataclasses.fields(TrainingOptions) if f.name != "stages")
        _check_keys(options, known, f"{where} options")
        try:
            stages.append(RecipeStage(number, TrainingOptions(stages=(number,), **{k: _tuples(v) for k, v in options.items()})))
        except (TypeError, ValueError) as error:
            raise RecipeError(f"{where} options: {error}") from None
    numbers = [stage.stage for stage in stages]
    if numbers != sorted(set(numbers)):
        raise RecipeError(f"{source}: stages {numbers} must come in increasing order, each once.")
    return tuple(stages)
