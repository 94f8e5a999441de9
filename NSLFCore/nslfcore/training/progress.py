"""Where one training stage stands: the state a checkpoint saves and a resume restores as a unit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class StageProgress:
    """The progress of one stage in a run (mutable: the trainer advances it step by step).

    Attributes:
        epoch: completed epochs.
        step: optimiser steps taken in this stage.
        batch_in_epoch: batches of the current (unfinished) epoch already run; a resume continues there.
        partial_loss_sum: sum of the total training loss over those batches (for the epoch's mean).
        best_metric: lowest selection metric so far (``Stage.selection_metric``: the validation loss;
            in stage 1 its reconstruction term), ``None`` before the first validation.
        best_epoch: the epoch that reached it (1-based; 0 before the first validation).
        patience: epochs since the last improvement (early stopping counts these).
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

    def record_validation(self, loss: float) -> bool:
        """Close an epoch with its validation ``loss``; returns whether it is the best so far."""
        self.epoch += 1
        self.batch_in_epoch = 0
        self.partial_loss_sum = 0.0
        if self.best_metric is None or loss < self.best_metric:
            self.best_metric, self.best_epoch, self.patience = loss, self.epoch, 0
            return True
        self.patience += 1
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
