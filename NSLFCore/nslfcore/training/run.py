"""``nslf train`` as a library function: check everything, set up the run folder, train.

All checks (data folder, cases, split, stage order) happen before anything is written, so a bad
argument fails fast with one message and leaves no files behind.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from nslfcore.config import NSLFConfig
from nslfcore.data.brats import find_cases, read_split_lists, seeded_split, select_cases
from nslfcore.data.cache import CaseCache
from nslfcore.data.case import CaseFiles
from nslfcore.data.dataset import BratsCropDataset
from nslfcore.data.output import OutputLock, atomic_write_text
from nslfcore.data.validation import case_problems
from nslfcore.distributed import DistributedContext, device_for_rank, distributed_context
from nslfcore.errors import NSLFError
from nslfcore.models import NSLF
from nslfcore.training.events import EventWriter
from nslfcore.training.options import TrainingOptions
from nslfcore.training.stages import Stage
from nslfcore.training.trainer import STOP_FILE, Trainer

if TYPE_CHECKING:
    from nslfcore.training.synthesis_data import SynthesisData


class TrainingSetupError(NSLFError, ValueError):
    """A training argument that cannot work (one sentence, naming the thing to fix)."""


@dataclass(frozen=True)
class DataSpec:
    """Where the cases come from: a folder, ``count`` generated phantoms (``tiny`` for the procedural ones),
    or a label bank whose cases are synthesised on the fly (:mod:`nslfcore.training.synthesis_data`)."""

    folder: Path | None = None
    phantom_count: int = 0
    tiny: bool = False
    bank: Path | None = None

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        """``DIR``, ``phantom:N`` (realistic 240x240x155 phantoms), ``phantom-tiny:N`` (48^3 procedural) or
        ``synth:FOLDER`` (a label bank of ``nslf synth --bank``)."""
        if text.startswith("synth:"):
            if not text[len("synth:") :]:
                raise TrainingSetupError("--data synth: give the label bank's folder, e.g. synth:bank.")
            return cls(bank=Path(text[len("synth:") :]))
        for prefix, tiny in (("phantom-tiny:", True), ("phantom:", False)):
            if text.startswith(prefix):
                try:
                    count = int(text[len(prefix) :])
                except ValueError:
                    count = 0
                if count < 2:
                    raise TrainingSetupError(f"--data {text}: give at least 2 phantom cases, e.g. {prefix}20.")
                return cls(phantom_count=count, tiny=tiny)
        return cls(folder=Path(text))

    def describe(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        if self.bank is not None:
            return f"synth:{self.bank}"
        return f"phantom{'-tiny' if self.tiny else ''}:{self.phantom_count}"


def _select_device(spec: str, context: DistributedContext) -> torch.device:
    """:func:`nslfcore.distributed.device_for_rank`, its errors as :class:`TrainingSetupError`."""
    try:
        return device_for_rank(spec, context)
    except ValueError as error:
        raise TrainingSetupError(f"--device {spec}: {error}") from error


def folder_cases(folder: Path) -> tuple[list[CaseFiles], dict[str, list[str]]]:
    if not folder.is_dir():
        raise TrainingSetupError(f"--data {folder}: no such folder; give a BraTS-layout folder or phantom:N.")
    cases = find_cases(folder)
    if not cases:
        raise TrainingSetupError(f"--data {folder}: no cases found (expected BraTS-layout case folders).")
    # Reading and checking every file is I/O and zlib (which release the GIL): threads make it
    # several times faster (48 BraTS-size cases: about 20 s one by one on a 16-core machine).
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        found = list(pool.map(lambda case: case_problems(case, require_label=True), cases))
    for problems in found:
        if problems:
            raise TrainingSetupError(f"--data {folder}: {problems[0]}")
    try:
        split = read_split_lists(folder)
        split.setdefault("valid", [])
    except FileNotFoundError:
        split = seeded_split([c.name for c in cases], fractions=(0.8, 0.2, 0.0), seed=0)
    if not split.get("train"):
        raise TrainingSetupError(f"--data {folder}: the split leaves no training case; add cases or fix train.txt.")
    try:
        select_cases(cases, split["train"] + split["valid"])
    except ValueError as error:
        raise TrainingSetupError(f"--data {folder}: {error}") from error
    if not split["valid"]:  # a single case: validate on the training case rather than on nothing
        split["valid"] = split["train"][:1]
    return cases, {"train": split["train"], "valid": split["valid"]}


def _open_bank(folder: Path, options: TrainingOptions) -> SynthesisData:
    """The label bank of ``--data synth:FOLDER``, split for training and validation (imported here: it needs SciPy)."""
    from nslfcore.training.synthesis_data import SynthesisData

    return SynthesisData.open(folder, options)


def _phantom_folder(spec: DataSpec, run_dir: Path, seed: int, context: DistributedContext) -> Path:
    """Generate the phantom cases once into the run folder (rank 0), reusing them on resume."""
    from nslfcore.data.phantom import write_phantom_dataset

    folder = run_dir / "data" / f"{spec.describe().replace(':', '-')}-seed{seed}"
    marker = folder / ".complete"
    if context.is_main and not marker.exists():
        write_phantom_dataset(folder, spec.phantom_count, seed=seed, tiny=spec.tiny, overwrite=True)  # its own folder
        marker.write_text(json.dumps({"count": spec.phantom_count, "seed": seed, "tiny": spec.tiny}))
    if context.active:
        dist.barrier()
    return folder


def check_stage_order(stages: tuple[int, ...], run_dir: Path, init: Path | None = None) -> None:
    """Stage 3 needs a fusion network: stage 2 in this run, its checkpoint in the run folder, or ``--init`` weights."""
    if 3 in stages and 2 not in stages and init is None and not (run_dir / "stage2_best.pt").exists():
        raise TrainingSetupError(
            f"--stage 3 needs a stage-2 checkpoint, but {run_dir / 'stage2_best.pt'} does not exist; "
            "run --stage 2 first, use --stage all, or start from a trained model with --init."
        )


def initial_weights(init: Path, config: NSLFConfig) -> tuple[dict, tuple[int, ...]]:
    """The state dict of ``init`` (a weights or training checkpoint, read weights-only) for ``config``,
    and the stages whose training those weights carry (:func:`~nslfcore.model_store.files.trained_stages`)."""
    from nslfcore.model_store.files import trained_stages
    from nslfcore.training.checkpoint import load_checkpoint

    try:
        data = load_checkpoint(init)
    except (FileNotFoundError, ValueError) as error:
        raise TrainingSetupError(f"--init {init}: {error}") from None
    if NSLFConfig.from_json(data["config"]) != config:
        raise TrainingSetupError(f"--init {init} was trained with another network configuration; use the same --config.")
    return data["model"], trained_stages(data)


def train(
    data: str,
    run_dir: str | Path,
    config: NSLFConfig,
    options: TrainingOptions,
    device: str = "auto",
    events: str | Path | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """Train NSLF; returns ``"completed"`` or ``"stopped"``. Raises :class:`TrainingSetupError` for bad arguments.

    ``init``: start from this checkpoint's weights (fine-tuning) instead of random initialisation;
    then any stage may come first (stage 3 uses the init's fusion network). ``cache_dir``: keep the
    preprocessed cases there as memory-mapped ``.npy`` files (:class:`~nslfcore.data.cache.CaseCache`),
    so later runs on the same files (another stage, a resume) skip reading and preprocessing.
    """
    run_dir = Path(run_dir)
    spec = DataSpec.parse(data)
    context = distributed_context()
    torch_device = _select_device(device, context)
    init = Path(init) if init is not None else None
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingSetupError(f"--out {run_dir} is a file; give a folder for the run.")
    check_stage_order(options.stages, run_dir, init)
    if not resume and any(run_dir.glob("stage*.pt")):
        raise TrainingSetupError(f"{run_dir} already holds checkpoints; use --resume to continue or another --out.")
    weights, inherited = initial_weights(init, config) if init is not None else (None, ())  # checked before anything is written
    stale = [s for s in inherited if min(options.stages) < s and s not in options.stages]
    if stale and context.is_main:
        warnings.warn(f"--init {init} has stage {stale[-1]} trained on what stage {min(options.stages)} will change: "
                      f"the model this run writes needs stage {', '.join(map(str, stale))} again before segmenting "
                      f"(train --stage all, or --stage {stale[-1]} --init on the result).", stacklevel=2)  # fmt: skip
    folder_data = folder_cases(spec.folder) if spec.folder is not None else None
    synthesis = _open_bank(spec.bank, options) if spec.bank is not None else None  # checked before anything is written
    lock = None
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(run_dir, "nslf train").acquire()  # a second training into this run folder is refused
        (run_dir / STOP_FILE).unlink(missing_ok=True)  # a STOP left by an earlier stop would end this run at once
    try:
        return _train_in(run_dir, spec, folder_data, config, options, torch_device, context, events, resume, init,
                         weights, inherited, cache_dir, synthesis)  # fmt: skip
    finally:
        if lock is not None:
            lock.release()


def _train_in(run_dir: Path, spec: DataSpec, folder_data, config: NSLFConfig, options: TrainingOptions,
              torch_device: torch.device, context: DistributedContext, events, resume: bool, init: Path | None,
              weights: dict | None, inherited: tuple[int, ...], cache_dir,
              synthesis: SynthesisData | None = None) -> str:  # fmt: skip
    """:func:`train` once the arguments are checked and the run folder is locked."""
    if folder_data is not None:
        cases, split = folder_data
    elif synthesis is not None:  # training crops synthesised on the fly, validation on cases written once
        cases = find_cases(synthesis.validation_folder(run_dir, torch_device, context))
        split = synthesis.split([c.name for c in cases])
    else:
        cases, split = folder_cases(_phantom_folder(spec, run_dir, options.seed, context))

    _seed_everything(options.seed, options.deterministic)
    model = NSLF(config)  # same initialisation on every rank (DDP also broadcasts rank 0's)
    if weights is not None:
        model.load_state_dict(weights)
    cache = CaseCache(cache_dir=cache_dir)
    train_cases = select_cases(cases, split["train"]) if synthesis is None else []  # synthesis: map names, no files
    valid_cases = select_cases(cases, split["valid"])

    def datasets(stage: Stage) -> tuple[Dataset, BratsCropDataset]:
        crop = stage.crop(options)
        valid_set = BratsCropDataset(valid_cases, crop, train=False, cache=cache, seed=options.seed)
        if options.num_workers:
            valid_set.preload()
        if synthesis is not None:  # nothing to preload: the label maps are memory-mapped
            return synthesis.train_set(crop, options, torch_device), valid_set
        train_set = BratsCropDataset(
            train_cases, crop, train=True, tumour_fraction=options.tumour_fraction, cache=cache, seed=options.seed,
            samples_per_case=options.samples_per_case, augment=options.augmentation, et_fraction=options.et_fraction,
            sequence_dropout=options.sequence_dropout,
        )
        if options.num_workers:
            train_set.preload()
        return train_set, valid_set

    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            run_dir / "run.json",
            json.dumps(
                {"config": config.to_dict(), "options": json.loads(options.to_json()), "data": spec.describe(),
                 "split": split, "init": None if init is None else str(init)},
                indent=2,
            )
        )  # fmt: skip
    if context.active:
        dist.barrier()
    writer = EventWriter(events, enabled=context.is_main)
    status = "failed"
    try:
        if context.is_main:
            writer.emit(
            "run_start",
            run_dir=str(run_dir),
            stages=list(options.stages),
            config=config.to_dict(),
            data={"train": len(split["train"]), "valid": len(split["valid"]), "source": spec.describe()},
            device=str(torch_device),
            world_size=context.world_size,
            resume=resume,
            )
        trainer = Trainer(model, options, run_dir, datasets, split, writer, torch_device, context, resume, init is not None,
                          inherited_stages=inherited)
        status = trainer.fit()
        return status
    except Exception as error:
        if context.is_main:
            writer.emit("error", message=f"{type(error).__name__}: {error}")
        raise
    finally:
        if context.is_main:
            writer.emit("run_end", status=status)
        writer.close()


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
