"""Where one training stage stands: the state a checkpoint saves and a resume restores as a unit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class StageProgress:
    """The progress of one stage in a run (mutable: the trainer advances it step by step).

    Attributes:
        epoch: completed epochs.
        step: optimiser steps taken in this stage.
        batch_in_epoch: batches of the current (unfinished) epoch already run; a resume continues there.
        partial_loss_sum: sum of the total training loss over those batches (for the epoch's mean).
        best_metric: best selection metric so far (``Stage.selection_metric``: the validation loss,
            lowest best; in stage 1 its reconstruction term; in stage 3 with whole-case validation
            the mean whole-case Dice, highest best), ``None`` before the first validation.
        best_epoch: the epoch that reached it (1-based; 0 before the first validation).
        patience: epochs since the best one, as of the last epoch that selected (early stopping counts these).
        finished: the stage ran to its end (epochs done, early stop or time limit).
    """

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    partial_loss_sum: float = 0.0
    best_metric: float | None = None
    best_epoch: int = 0
    patience: int = 0
    finished: bool = False

    def record_validation(self, metric: float | None, mode: Literal["min", "max"] = "min") -> bool:
        """Close an epoch with its selection ``metric``; returns whether it is the best so far.

        ``mode``: ``"min"`` when lower is better (a loss), ``"max"`` when higher is (a Dice); see
        ``Stage.selection_mode``. ``None``: the epoch does not take part in selection (stage 3
        between whole-case validations): the best and the patience stay as they are, so only
        epochs of one metric are compared and early stopping is decided on epochs that select.
        Otherwise ``patience`` becomes the epochs since the best one.
        """
        if mode not in ("min", "max"):
            raise ValueError(f'selection mode must be "min" or "max", got {mode!r}.')
        self.epoch += 1
        self.batch_in_epoch = 0
        self.partial_loss_sum = 0.0
        if metric is None:
            return False
        best = self.best_metric
        if best is None or (metric < best if mode == "min" else metric > best):
            self.best_metric, self.best_epoch, self.patience = metric, self.epoch, 0
            return True
        self.patience = self.epoch - self.best_epoch
        return False

    def to_dict(self) -> dict[str, Any]:
        """Plain values (numbers, ``None``, booleans) that ``torch.load(weights_only=True)`` reads back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> StageProgress:
        """The progress stored in a training-state checkpoint.

        Checkpoints keep it under ``"progress"``; those written before the stage objects stored the
        same fields at the top level (same ``format_version``: model files did not change), so old
        run folders still resume.
        """
        stored = state.get("progress", state)
        return cls(**{f.name: stored[f.name] for f in dataclasses.fields(cls) if f.name in stored})
