"""The NSLF trainer: runs the nested stages with checkpoints, resume, early stopping and events.

A run is a folder (nnU-Net style): ``run.json`` (configuration, options, data split),
``stage1.pt`` / ``stage2.pt`` / ``stage3.pt`` (last state, for resuming), ``stageN_best.pt``
(best validation weights), ``events.jsonl`` when asked for, and ``STOP``, a file whose appearance
asks the run to stop gracefully (finish the step, write a checkpoint, exit).

The stage loop reads as: :meth:`Trainer.fit` -> :meth:`run_stage` -> per epoch
:meth:`on_train_epoch_start`, :meth:`train_step` per batch, :meth:`validation_epoch`,
:meth:`on_epoch_end` (early stopping, checkpoints). What differs between stages lives in the
:class:`~nslfcore.training.stages.Stage` objects; what one stage holds while it trains lives in a
:class:`StageRun`, whose :class:`~nslfcore.training.progress.StageProgress` is what checkpoints
save and restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.optimizers.lr_scheduler import WarmupCosineSchedule
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from nslfcore.distributed import DistributedContext
from nslfcore.model_store import save_model
from nslfcore.models import NSLF
from nslfcore.training.case_validation import case_validation
from nslfcore.training.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    load_checkpoint,
    new_checkpoint,
    restore_rng_state,
)
from nslfcore.training.events import EventWriter
from nslfcore.training.options import TrainingOptions
from nslfcore.training.progress import StageProgress
from nslfcore.training.sampler import ResumableDistributedSampler
from nslfcore.training.stages import Stage, StageStep, stages_for

STOP_FILE = "STOP"


class TrainingStopped(Exception):
    """Raised inside the stage loop when a graceful stop was asked for (``STOP`` file or ``stop_after_epochs``)."""


def stage_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class StageRun:
    """Everything one stage's training holds while it runs (built by :meth:`Trainer.start_stage`).

    ``progress`` is what a checkpoint saves and a resume restores; the rest is rebuilt from the
    options, the stage and the datasets.
    """

    stage: Stage
    step_module: torch.nn.Module  # StageStep, possibly wrapped by DDP and/or torch.compile
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, WarmupCosineSchedule]
    train_set: Dataset
    valid_set: Dataset
    sampler: ResumableDistributedSampler
    steps_per_epoch: int
    epochs: int  # the stage's maximum epochs (``options.epochs``)
    progress: StageProgress = field(default_factory=StageProgress)
    clock: float = field(default_factory=time.perf_counter)  # when this process started the stage
    start_step: int = 0  # ``progress.step`` when this process started the stage (for speed and ETA)

    @property
    def number(self) -> int:
        return self.stage.number

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def plain_step(self) -> StageStep:
        """The :class:`StageStep` inside any DDP or compile wrapper."""
        module = self.step_module
        module = getattr(module, "_orig_mod", module)  # torch.compile
        module = module.module if isinstance(module, DistributedDataParallel) else module
        assert isinstance(module, StageStep)
        return module


class Trainer:
    """Trains an :class:`NSLF` model through the selected stages.

    Args:
        model: the model (on CPU; moved to ``device`` here).
        options: :class:`TrainingOptions`.
        run_dir: the run folder.
        datasets: ``stage -> (train_dataset, valid_dataset)`` factory; datasets yield
            ``{"image": (4, z, y, x) float32, "label": (z, y, x) int64}`` crops of ``stage.crop(options)``
            and may expose ``set_epoch(epoch)`` to re-seed their random crops and augmentation.
        split: the case names of the training and validation sets (stored in checkpoints).
        events: where events go.
        device: torch device.
        context: distributed rank and world size.
        resume: continue from the run folder's checkpoints.
        initialised: the model already holds trained weights (``nslf train --init``), so a stage may
            start without the previous stage's checkpoint in the run folder.
        inherited_stages: the stages whose training the ``--init`` weights carry. Model files record
            the ones below this run's first stage with this run's (``trained_stages``): the stages are
            nested, so a stage-2 fine-tune of a segmenting model leaves a segmenter trained on other
            features, and :func:`~nslfcore.model_store.load_model` says so.
    """

    def __init__(
        self,
        model: NSLF,
        options: TrainingOptions,
        run_dir: str | Path,
        datasets: Callable[[Stage], tuple[Dataset, Dataset]],
        split: dict[str, list[str]],
        events: EventWriter,
        device: torch.device,
        context: DistributedContext = DistributedContext(),
        resume: bool = False,
        initialised: bool = False,
        inherited_stages: tuple[int, ...] = (),
    ) -> None:
        self.model = model.to(device)
        self.initialised = initialised
        self.inherited_stages = tuple(inherited_stages)
        self.options = options
        self.run_dir = Path(run_dir)
        self.datasets = datasets
        self.split = split
        self.events = events
        self.device = device
        self.context = context
        self.resume = resume
        self.use_amp = options.amp and device.type == "cuda"
        self.stages: list[Stage] = stages_for(options, model)
        # channels-last-3d: faster 3-D convolutions on CUDA and with oneDNN on CPU (1.5x per step measured)
        self.model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        self._epochs_this_process = 0

    # ------------------------------------------------------------------ run level
    def fit(self) -> str:
        """Run every selected stage; returns ``"completed"`` or ``"stopped"``."""
        for stage in self.stages:
            try:
                self.run_stage(stage)
            except TrainingStopped:
                return "stopped"
        return "completed"

    def checkpoint_path(self, stage: int, best: bool = False) -> Path:
        return self.run_dir / (f"stage{stage}_best.pt" if best else f"stage{stage}.pt")

    # ------------------------------------------------------------------ stage level
    def run_stage(self, stage: Stage) -> None:
        """Train ``stage`` to its end (epochs, early stop or time limit), or skip it when a resumed run finished it."""
        state = self._stage_start_state(stage)
        if state is not None and StageProgress.from_checkpoint(state).finished:
            self._load_best_weights(stage.number)
            return
        run = self.start_stage(stage, state)
        options = self.options
        self._emit("stage_start", stage=stage.number, epochs=options.epochs, steps_per_epoch=run.steps_per_epoch,
                   start_epoch=run.progress.epoch)  # fmt: skip
        while run.progress.epoch < options.epochs:
            self.on_train_epoch_start(run)
            mean_loss = self.train_epoch(run)
            val = self.validation_epoch(run)
            if self.on_epoch_end(run, mean_loss, val):
                break
        self._finish_stage(run)

    def start_stage(self, stage: Stage, state: dict[str, Any] | None) -> StageRun:
        """Set up ``stage``: trainable parts, optimisers, schedules, data; restore ``state`` (a resume) if given."""
        options = self.options
        stage.configure_trainable(self.model)
        step_module: torch.nn.Module = StageStep(self.model, stage, options)
        optimizers = stage.build_optimizers(self.model, options)
        train_set, valid_set = self.datasets(stage)
        sampler = ResumableDistributedSampler(
            train_set, self.context.world_size, self.context.rank, shuffle=True, seed=options.seed + stage.number
        )
        steps_per_epoch = math.ceil(len(sampler) / options.batch_size)
        if options.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, options.max_steps_per_epoch)
        total_steps = steps_per_epoch * options.epochs
        warmup = int(round(options.warmup_epochs * steps_per_epoch))
        schedulers = {
            name: WarmupCosineSchedule(
                opt, warmup_steps=warmup, t_total=total_steps, end_lr=options.min_lr, warmup_multiplier=0.1
            )
            for name, opt in optimizers.items()
        }
        if self.context.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = DistributedDataParallel(step_module, device_ids=ids)
        if options.compile:
            step_module = torch.compile(step_module)  # type: ignore[assignment]
        run = StageRun(stage, step_module, optimizers, schedulers, train_set, valid_set, sampler, steps_per_epoch,
                       options.epochs)  # fmt: skip
        if state is not None:
            self._restore(run, state)
        run.clock, run.start_step = time.perf_counter(), run.progress.step
        return run

    def _stage_start_state(self, stage: Stage) -> dict[str, Any] | None:
        """The checkpoint to continue from (``--resume``), after loading the previous stage's best weights."""
        path = self.checkpoint_path(stage.number)
        if self.resume and path.exists():
            state = load_checkpoint(path)
            if state["stage"] != stage.number:
                raise ValueError(f"{path} holds stage {state['stage']}, not {stage.number}.")
            return state
        if stage.number > 1:
            previous = self.checkpoint_path(stage.number - 1, best=True)
            if previous.exists():
                self._load_best_weights(stage.number - 1)
            elif stage.needs_previous_weights() and not self.initialised:
                raise FileNotFoundError(
                    f"Stage {stage.number} needs the network of stage {stage.number - 1}: {previous} is missing; "
                    f"run stage {stage.number - 1} first (or --stage all)."
                )
        return None

    def _load_best_weights(self, stage: int) -> None:
        best = load_checkpoint(self.checkpoint_path(stage, best=True))
        self.model.load_state_dict(best["model"])

    # ------------------------------------------------------------------ epoch level
    def on_train_epoch_start(self, run: StageRun) -> None:
        epoch = run.progress.epoch  # 0-based index of the epoch starting now
        run.sampler.set_epoch(epoch)
        if run.progress.batch_in_epoch:
            run.sampler.set_start_index(run.progress.batch_in_epoch * self.options.batch_size)
        for dataset in (run.train_set, run.valid_set):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(stage_seed(self.options.seed, run.number, epoch))
        self.model.train()

    def _loader(self, dataset: Dataset, sampler: Any, seed: int) -> DataLoader:
        workers = self.options.num_workers
        return DataLoader(
            dataset,
            batch_size=self.options.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(seed),
        )

    def train_epoch(self, run: StageRun) -> float:
        """One epoch (or what is left of it); returns the mean total loss."""
        progress = run.progress
        loader = self._loader(run.train_set, run.sampler, stage_seed(self.options.seed, run.number, progress.epoch, 1))
        bar = _progress_bar(run.steps_per_epoch, progress.batch_in_epoch, f"stage {run.number} epoch {progress.epoch + 1}",
                            self.context)  # fmt: skip
        try:
            for batch in loader:
                if progress.batch_in_epoch >= run.steps_per_epoch:
                    break
                terms = self.train_step(run, batch)
                progress.batch_in_epoch += 1
                progress.partial_loss_sum += terms["total"]
                self._emit_iteration(run, terms)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['total']:.4f}")
                if self._stop_requested():
                    self._save_last(run)
                    raise TrainingStopped
                if self._past_time_limit(run):  # after the step: every epoch trains at least once
                    break
        finally:
            if bar is not None:
                bar.close()
        self.context.broadcast_buffers(self.model)  # every replica gets rank 0's BatchNorm statistics
        mean = progress.partial_loss_sum / max(progress.batch_in_epoch, 1)
        return self.context.mean(mean, self.device)

    def train_step(self, run: StageRun, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step on one batch; returns the loss terms as floats."""
        image, label = self._to_device(batch)
        step = run.progress.step
        generator = torch.Generator(device=self.device).manual_seed(stage_seed(self.options.seed, run.number, step))
        for opt in run.optimizers.values():
            opt.zero_grad(set_to_none=True)
        with self._autocast():
            terms = run.step_module(image, label, generator)
        total = terms["total"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"Stage {run.number} loss became {total.item()} at step {step}; lower the learning rate.")
        total.backward()
        for opt in run.optimizers.values():
            opt.step()
        for sched in run.schedulers.values():
            sched.step()
        run.progress.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def validation_epoch(self, run: StageRun) -> dict[str, float]:
        """Mean loss terms (and the stage's own metrics, e.g. Dice in stage 3) over the validation crops."""
        self.model.eval()
        sampler = ResumableDistributedSampler(run.valid_set, self.context.world_size, self.context.rank, shuffle=False, seed=0)
        sums: dict[str, float] = {}
        count = 0
        step_module = run.plain_step()
        with torch.inference_mode(), self._autocast():
            for batch in self._loader(run.valid_set, sampler, 0):
                image, label = self._to_device(batch)
                terms = step_module(image, label, torch.Generator(device=self.device).manual_seed(count))
                values = {k: float(v) for k, v in terms.items()} | run.stage.validation_metrics(step_module, label)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        metrics = {("loss" if k == "total" else k): self.context.mean(v / max(count, 1), self.device) for k, v in sums.items()}
        self.model.train()
        return metrics

    def case_validation_epoch(self, run: StageRun) -> dict[str, float]:
        """Whole-case Dice (``case_dice_et``, ``case_dice_tc``, ``case_dice_wt``) of the model as users run it,
        on the first ``case_validation_max_cases`` validation cases (see :mod:`~nslfcore.training.case_validation`)."""
        precision = "bf16" if self.use_amp else "fp32"
        return case_validation(self.model, run.valid_set, self.device, precision,  # type: ignore[arg-type]
                               self.options.case_validation_max_cases, self.context)  # fmt: skip

    def _case_validation_due(self, run: StageRun, last: bool) -> bool:
        """Whether this epoch validates whole cases: every ``stage.case_validation_every`` epochs and at the stage's ``last``."""
        every = run.stage.case_validation_every
        epoch = run.progress.epoch + 1  # 1-based number of the epoch ending now
        return every is not None and (epoch % every == 0 or epoch >= self.options.epochs or last)

    def on_epoch_end(self, run: StageRun, train_loss: float, val: dict[str, float]) -> bool:
        """Book-keeping after an epoch; returns ``True`` when early stopping or the time limit ends the stage.

        Whole-case validation, when due, runs here: the time limit is read first, so the epoch
        that ends the stage is always one that validates whole cases (early stopping can only
        follow such an epoch: the others leave the patience as it is).
        """
        progress = run.progress
        self._epochs_this_process += 1
        time_up = self._past_time_limit(run)
        if self._case_validation_due(run, last=time_up):
            val = val | self.case_validation_epoch(run)
        selection = run.stage.selection_metric(val) if val else train_loss  # no validation crops: the training loss
        improved = progress.record_validation(selection, run.stage.selection_mode)
        self._emit("validation", stage=run.number, epoch=progress.epoch,
                   metrics=val | {"train_loss": train_loss, "selection": selection})  # fmt: skip
        if improved:
            self._save_best(run)
        self._save_last(run)
        if time_up:
            limit = self.options.time_limit_s
            self._emit("time_limit", stage=run.number, epoch=progress.epoch, best_epoch=progress.best_epoch, limit_s=limit)
            return True
        if progress.patience >= self.options.patience:
            self._emit("early_stop", stage=run.number, epoch=progress.epoch, best_epoch=progress.best_epoch,
                       patience=progress.patience)  # fmt: skip
            return True
        limit = self.options.stop_after_epochs
        if limit is not None and self._epochs_this_process >= limit and progress.epoch < self.options.epochs:
            raise TrainingStopped
        return False

    def _finish_stage(self, run: StageRun) -> None:
        digests = self._replica_digests()  # before loading the best weights: the replicas as trained
        run.progress.finished = True
        self._save_last(run)
        if self.context.active:
            dist.barrier()  # rank 0 has written the best weights every rank now loads
        self._load_best_weights(run.number)
        if len(set(digests)) > 1:
            raise RuntimeError(f"Distributed replicas diverged in stage {run.number}: weight digests {digests}.")
        self._emit(
            "stage_end",
            stage=run.number,
            epochs_run=run.progress.epoch,
            best_metric=run.progress.best_metric,
            best_checkpoint=str(self.checkpoint_path(run.number, best=True)),
            replica_digests=digests,
        )

    def _replica_digests(self) -> list[str]:
        """SHA-256 of every process's parameters and buffers (one entry without distribution)."""
        h = hashlib.sha256()
        for key, value in sorted(self.model.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return self.context.gather(h.hexdigest()[:16])

    # ------------------------------------------------------------------ checkpoints
    def _save_best(self, run: StageRun) -> None:
        if not self.context.is_main:
            return
        progress = run.progress
        # Nested: a stage changes what every later stage was trained on, so the --init file's later stages
        # no longer hold (measured: 174 stage-2 samples on the shipped model took its Dice ET 0.90 -> 0.48).
        first = min(s.number for s in self.stages)
        kept = {s for s in self.inherited_stages if s < first}
        trained = sorted(kept | {s.number for s in self.stages if s.number <= run.number})
        path = save_model(self.model, self.checkpoint_path(run.number, best=True), stage=run.number, epoch=progress.epoch,
                          best_metric=progress.best_metric, trained_stages=trained)  # fmt: skip
        self._emit("checkpoint", stage=run.number, epoch=progress.epoch, path=str(path), best=True)

    def _save_last(self, run: StageRun) -> None:
        if not self.context.is_main:
            return
        state = new_checkpoint(
            kind="training-state",
            config=self.model.config.to_json(),
            training=self.options.to_json(),
            stage=run.number,
            progress=run.progress.to_dict(),
            model=self.model.state_dict(),
            optimizers={k: v.state_dict() for k, v in run.optimizers.items()},
            schedulers={k: v.state_dict() for k, v in run.schedulers.items()},
            scaler=None,
            rng=capture_rng_state(),
            split=self.split,
        )
        path = atomic_torch_save(state, self.checkpoint_path(run.number))
        self._emit("checkpoint", stage=run.number, epoch=run.progress.epoch, path=str(path), best=False)

    def _restore(self, run: StageRun, state: dict[str, Any]) -> None:
        if state["config"] != self.model.config.to_json():
            raise ValueError(
                f"The checkpoint of stage {run.number} was trained with another network configuration; "
                "resume with the same --config."
            )
        self.model.load_state_dict(state["model"])
        for name, opt in run.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in run.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        restore_rng_state(state["rng"])
        run.progress = StageProgress.from_checkpoint(state)

    # ------------------------------------------------------------------ helpers
    def _past_time_limit(self, run: StageRun) -> bool:
        """Whether this stage has trained longer than ``options.time_limit_s`` in this process (same answer on every rank)."""
        limit = self.options.time_limit_s
        if limit is None:
            return False
        return self.context.any(time.perf_counter() - run.clock > limit, self.device)

    def _stop_requested(self) -> bool:
        return self.context.any((self.run_dir / STOP_FILE).exists(), self.device)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        return image.contiguous(memory_format=torch.channels_last_3d), label

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _emit(self, kind: str, **fields: Any) -> None:
        if self.context.is_main:
            self.events.emit(kind, **fields)

    def _emit_iteration(self, run: StageRun, terms: dict[str, float]) -> None:
        elapsed = time.perf_counter() - run.clock
        step = run.progress.step
        steps_done = step - run.start_step
        per_step = elapsed / max(steps_done, 1)
        samples_per_s = steps_done * self.options.batch_size * self.context.world_size / max(elapsed, 1e-9)
        self._emit(
            "iteration",
            stage=run.number,
            epoch=run.progress.epoch + 1,
            step=step,
            losses=terms,
            lr=float(run.optimizers["adam"].param_groups[0]["lr"]),
            samples_per_s=samples_per_s,
            eta_s=per_step * (run.total_steps - step),
            progress=step / max(run.total_steps, 1),
        )


def _progress_bar(total: int, initial: int, description: str, context: DistributedContext) -> Any:
    """A tqdm bar on an interactive terminal (rank 0 only); ``None`` otherwise."""
    if not context.is_main or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=description, leave=False, dynamic_ncols=True)

